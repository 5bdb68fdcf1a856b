"""Supervised worker processes for model runners (ARCHITECTURE.md, "Processes").

A native crash, hang or memory blow-up inside a model library costs one worker
restart, not the kiosk: ``supervisor.ProcessGenerator`` runs the generator in a
child process (``generator_child``) and talks to it with length-prefixed msgpack
frames (``protocol``).
"""
