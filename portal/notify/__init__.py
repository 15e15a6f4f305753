"""Mail delivery: the Notifier seam (base.py) and its SMTP and filesystem implementations."""
