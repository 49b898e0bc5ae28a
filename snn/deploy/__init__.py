"""Deployment: the folded integer form of a quantized network, its packed export, and a numpy reference."""
