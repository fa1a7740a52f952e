"""afdplan: size Attention–FFN disaggregated LLM decoding deployments."""

__version__ = "0.1.0"
