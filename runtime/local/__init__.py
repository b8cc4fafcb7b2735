"""The whole system on one machine (`python -m runtime local`): embedded AWS, nodes, origins, page.

A deployable of its own beside the node and the origin SDK: it needs moto and the SDK, so it stays
out of the node's container image (.dockerignore) and out of the example Lambda's package
(infra/origin.py), and the node never imports it.
"""
