"""The static results site: ``data`` (reading a merged run), ``chart`` (the error-over-epochs
plot, each movie's ratings), ``search`` (the title index), ``taste`` (the taste page's
neighbours and its rule), ``runs`` (the Runs page and "what changed", read from the bucket's
runs.json at view time), ``sql`` (the SQL page's engine and database copy) and ``render``
(Jinja2 pages). Never imports Keras: everything comes
from DuckDB."""

from job.site.chart import best_baseline, error_chart_svg
from job.site.data import SiteData, load_site_data
from job.site.render import SiteSummary, render_site, write_site
from job.site.templates import check_templates, installed_templates, metric_label, stars

__all__ = [
    "SiteData",
    "SiteSummary",
    "best_baseline",
    "check_templates",
    "error_chart_svg",
    "installed_templates",
    "load_site_data",
    "metric_label",
    "render_site",
    "stars",
    "write_site",
]
