"""Durable storage: the Storage seam (base.py) and its backends (sqlite/, one module per role)."""
