"""Small fixes to what the theme writes into every page (registered in _config.yml).

The home page's <title> is its heading alone: Sphinx appends " — <docstitle>" to every page's
<title>, and on the home page, whose heading is the course's name, that repeats it. The sidebar's
logo text, which falls back on docstitle, is given the name explicitly on that page.

A code cell tagged `hide-cell` is an exercise's solution (CONTRIBUTING.md): its fold is labelled
"Show solution" / "Hide solution" instead of myst-nb's "Show code cell content". Other folds
(the bootstrap cell's `hide-input`) keep myst-nb's labels.

sphinx-thebe adds its inline `const THEBE_JS_URL = ...` script each time Sphinx re-reads the
sources (the bibliography makes it read twice), and the second copy is a console error
("Identifier 'THEBE_JS_URL' has already been declared"). Keep the first copy of each script.
"""
from docutils import nodes
from sphinx.transforms.post_transforms import SphinxPostTransform

SOLUTION_PROMPTS = ("Show solution", "Hide solution")


def drop_duplicate_scripts(app, pagename, templatename, context, doctree):
    scripts, seen = context.get("script_files"), set()
    if not scripts:
        return
    unique = []
    for script in scripts:
        attributes = getattr(script, "attributes", {})   # the filename is None or "" for inline
        key = (getattr(script, "filename", script) or "", tuple(sorted(attributes.items())))
        if key not in seen:
            seen.add(key)
            unique.append(script)
    scripts[:] = unique


def home_page_title_once(app, pagename, templatename, context, doctree):
    if pagename == app.config.root_doc and context.get("docstitle"):
        logo = dict(context.get("theme_logo") or {})
        logo.setdefault("text", context["docstitle"])
        context["theme_logo"], context["docstitle"] = logo, ""


class LabelSolutions(SphinxPostTransform):
    """Set the prompts of whole-cell folds before myst-nb's HideInputCells (priority 199) uses them."""

    default_priority = 198
    formats = ("html",)

    def run(self, **kwargs):
        for node in self.document.findall(nodes.container):
            if node.get("nb_element") == "cell_code" and node.get("hide_mode") == "all":
                node["prompt_show"], node["prompt_hide"] = SOLUTION_PROMPTS


def setup(app):
    app.connect("html-page-context", drop_duplicate_scripts)
    app.connect("html-page-context", home_page_title_once)
    app.add_post_transform(LabelSolutions)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
