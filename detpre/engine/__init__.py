"""Training: the detpre trainer and config set-up shared by the tools."""
