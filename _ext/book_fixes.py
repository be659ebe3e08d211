"""Small fixes to what the theme writes into every page (registered in _config.yml).

sphinx-thebe adds its inline `const THEBE_JS_URL = ...` script each time Sphinx re-reads the
sources (the bibliography makes it read twice), and the second copy is a console error
("Identifier 'THEBE_JS_URL' has already been declared"). Keep the first copy of each script.
"""


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


def setup(app):
    app.connect("html-page-context", drop_duplicate_scripts)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
