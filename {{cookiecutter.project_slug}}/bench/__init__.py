"""`python -m bench` (from the project directory): what pooling buys, measured on this machine."""
