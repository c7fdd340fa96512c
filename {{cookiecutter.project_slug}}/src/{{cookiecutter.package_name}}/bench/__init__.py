"""`python -m {{ cookiecutter.package_name }}.bench`: what pooling buys, measured on this machine."""
