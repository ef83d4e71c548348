"""Environments: activating a closure (PATH, a Python view, the recipes' ``[env]``)."""
