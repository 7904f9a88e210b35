"""Re-derive azure_llm_code_2024_week.csv from the Azure LLM inference trace 2024's published figure.

The week-long per-request files (AzureLLMInferenceTrace_code_1week.csv) are only on Azure blob storage,
out of reach here; the repository github.com/Azure/AzurePublicDataset (CC-BY 4.0) carries the notebook
analysis/AzureLLMInferenceDataset2024.ipynb, whose "Analysis over time" cell plots the invocations per
minute of the whole week from those files. This reads that figure (an embedded 1489x490 PNG) and
writes, for each pixel column of the plot (~7.2 minutes of the week), the lowest and highest
per-minute count the plotted line reaches.

    cd bench/data && python3 digitize_azure_llm_2024.py AzureLLMInferenceDataset2024.ipynb >azure_llm_code_2024_week.csv

Standard library only. The calibration constants are the figure's axes, measured on the PNG: spines at
columns 74 and 1471 (2024-05-10 00:00 and 2024-05-17 00:00 UTC), grid lines at rows 42 (6000/min)
to 344 (1000/min), 60.4 rows per 1000.
"""

from __future__ import annotations

import base64
import json
import struct
import sys
import zlib
from typing import Any

CELL_SOURCE = "plt.title(trace_name)\n    plt_invocations_time(df_trace)"
LEFT, RIGHT = 74.0, 1471.0  # x pixel of the first and last minute of the week
ZERO_ROW, ROWS_PER_UNIT = 404.4, 0.0604  # y pixel of 0 invocations/min, pixels per invocation/min
TOP, BOTTOM = 33, 404  # rows inside the axes
MINUTES = 7 * 24 * 60
LINE_HALF = 0.54  # the 1.5 pt line's half width beyond its centre (in pixel rows), at 50% coverage
HEADER = """\
# Azure LLM inference trace 2024, coding service: invocations per minute over one week
# (2024-05-10 00:00 to 2024-05-17 00:00 UTC), digitized from the published figure.
# Source: https://github.com/Azure/AzurePublicDataset (commit b469a11), analysis/AzureLLMInferenceDataset2024.ipynb,
#   the "Coding" plot of plt_invocations_time (per-minute counts of AzureLLMInferenceTrace_code_1week.csv).
#   Paper: Stojkovic et al., "DynamoLLM: Designing LLM Inference Clusters for Performance and Energy
#   Efficiency", HPCA 2025.
# License: CC-BY 4.0 (Creative Commons Attribution 4.0 International), published by Microsoft Azure;
#   this file is derived from (a digitization of) that data.
# Derivation: bench/data/digitize_azure_llm_2024.py. One row per pixel column of the plot (~7.2 min):
#   minute = the column's centre, minutes since 2024-05-10 00:00 UTC; low/high = the lowest/highest
#   per-minute count the plotted line reaches in that column (about +-17/min from the pixel grid).
#   The last column (the week's final, partial minute drops the line) is left out."""


def read_png(data: bytes) -> tuple[int, int, list[bytes]]:
    """Width, height and unfiltered RGBA rows of an 8-bit RGBA, non-interlaced PNG."""
    if data[:8] != b"\x89PNG\r\n\x1a\n":
        raise ValueError("not a PNG")
    pos, idat, width, height = 8, b"", 0, 0
    while pos < len(data):
        length, kind = struct.unpack(">I4s", data[pos : pos + 8])
        body = data[pos + 8 : pos + 8 + length]
        pos += 12 + length
        if kind == b"IHDR":
            width, height, depth, colour, _, _, interlace = struct.unpack(">IIBBBBB", body)
            if (depth, colour, interlace) != (8, 6, 0):
                raise ValueError("expected an 8-bit RGBA non-interlaced PNG")
        elif kind == b"IDAT":
            idat += body
    raw, stride, bpp = zlib.decompress(idat), width * 4, 4
    rows, previous, at = [], bytearray(stride), 0
    for _ in range(height):
        kind_, line = raw[at], bytearray(raw[at + 1 : at + 1 + stride])
        at += 1 + stride
        for i in range(stride):
            a = line[i - bpp] if i >= bpp else 0
            b = previous[i]
            c = previous[i - bpp] if i >= bpp else 0
            if kind_ == 1:
                line[i] = (line[i] + a) & 255
            elif kind_ == 2:
                line[i] = (line[i] + b) & 255
            elif kind_ == 3:
                line[i] = (line[i] + (a + b) // 2) & 255
            elif kind_ == 4:
                pa, pb, pc = abs(b - c), abs(a - c), abs(a + b - 2 * c)
                line[i] = (line[i] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 255
        rows.append(bytes(line))
        previous = line
    return width, height, rows


def figure(notebook: dict[str, Any]) -> bytes:
    """The first figure (the "Coding" one) of the cell that plots invocations per minute over time."""
    for cell in notebook["cells"]:
        if CELL_SOURCE in "".join(cell["source"]):
            for output in cell["outputs"]:
                if "image/png" in output.get("data", {}):
                    return base64.b64decode(output["data"]["image/png"])
    raise ValueError("no invocations-per-minute figure in the notebook")


def main(path: str) -> None:
    with open(path) as handle:
        _, _, rows = read_png(figure(json.load(handle)))
    print(HEADER)
    print("minute,low,high")
    for x in range(int(LEFT) + 1, int(RIGHT) - 1):
        # The line is matplotlib's C0 blue (31, 119, 180), anti-aliased over white or grey: blue
        # minus red >= 75 is at least 50% line.
        line = [y for y in range(TOP, BOTTOM) if rows[y][4 * x + 2] - rows[y][4 * x] >= 75]
        if not line:
            raise ValueError(f"no line in pixel column {x}")
        high = (ZERO_ROW - (min(line) + LINE_HALF)) / ROWS_PER_UNIT
        low = (ZERO_ROW - (max(line) - LINE_HALF)) / ROWS_PER_UNIT
        minute = (x - LEFT) * MINUTES / (RIGHT - LEFT)
        print(f"{minute:.2f},{max(0, round(low))},{max(0, round(high))}")


if __name__ == "__main__":
    main(sys.argv[1])
