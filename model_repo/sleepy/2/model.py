"""Fixed-time model: every batch takes `batch_delay_ms` (config parameter), like a GPU kernel
with constant cost per batch. OUTPUT0 = 2 * INPUT0; VERSION = the version that served it.
`load_delay_s` (optional, default 0): loading takes that long, as a large model's weights do."""

import json
import time

import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def initialize(self, args):
        config = json.loads(args["model_config"])
        parameters = config.get("parameters", {})
        self.delay = float(parameters.get("batch_delay_ms", {}).get("string_value", "20")) / 1000.0
        self.version = int(args["model_version"])
        time.sleep(float(parameters.get("load_delay_s", {}).get("string_value", "0")))

    def execute(self, requests):
        time.sleep(self.delay)  # one batch, one fixed cost
        responses = []
        for request in requests:
            data = pb_utils.get_input_tensor_by_name(request, "INPUT0").as_numpy()
            version = np.full((data.shape[0], 1), self.version, dtype=np.int32)
            responses.append(
                pb_utils.InferenceResponse(
                    [pb_utils.Tensor("OUTPUT0", data * 2), pb_utils.Tensor("VERSION", version)]
                )
            )
        return responses
