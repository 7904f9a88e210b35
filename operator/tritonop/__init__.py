"""tritonop: a Kubernetes operator for NVIDIA Triton Inference Server model deployments."""

__version__ = "0.1.0"
