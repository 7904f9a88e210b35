"""The node-local model cache: a short Job pinned to a node (`tritonop cache stage`) copies a
model version from the repository to the node's disk once, verified against its manifest, and
links it where that node's Triton pods load it; later pods on the node start from the copy.

verdict: the Job's answer (its termination message), imported by the operator.
plan: the pure decisions (cache key, eviction, tamper check), tested by tables.
stage: the stager itself (files, lock, copy, links).
"""
