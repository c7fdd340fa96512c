{{ (cookiecutter.project_name ~ ": " ~ cookiecutter.description) | python_string }}
