"""The network's design: the design space and its checks (spec, torch-free) and the nn.Module built from it (model)."""
