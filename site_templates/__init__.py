"""The site's Jinja2 templates and static files, installed as the package ``job.site_templates``
(pyproject.toml maps this folder there), so that ``importlib.resources`` finds them in a wheel
and in an editable install alike."""
