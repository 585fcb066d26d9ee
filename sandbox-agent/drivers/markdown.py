# POST /v1/util/convert_to_markdown: the resource at URI (set above this
# file by the agent) as Markdown on stdout. HTML is converted by the
# html2text module (Debian: python3-html2text); plain text and Markdown are
# passed through. Exit 2: a type that cannot be converted; 3: html2text is
# missing; 4: the resource cannot be read. The reason goes to stderr.
import mimetypes
import os
import sys
import urllib.request

MAX = 32 << 20
HTML = ("text/html", "application/xhtml+xml")
TEXT = ("text/plain", "text/markdown", "text/x-markdown")


def fail(code, message):
    sys.stderr.write(message + "\n")
    sys.exit(code)


def read():
    if URI.startswith(("http://", "https://")):
        with urllib.request.urlopen(URI, timeout=20) as r:
            return r.headers.get_content_type(), r.headers.get_content_charset(), r.read(MAX + 1)
    if URI.startswith("file://"):
        path = urllib.request.url2pathname(URI[7:])
    elif "://" in URI:
        fail(2, f"{URI.split('://')[0]}: URIs are http, https, file, or a path")
    else:
        path = URI
    kind = mimetypes.guess_type(path)[0]
    if kind is None and os.path.splitext(path)[1] in (".md", ".markdown"):
        kind = "text/markdown"
    with open(path, "rb") as f:
        return kind or "application/octet-stream", None, f.read(MAX + 1)


try:
    kind, charset, data = read()
except OSError as e:
    fail(4, f"cannot read {URI}: {e}")
if len(data) > MAX:
    fail(4, f"{URI} is larger than {MAX >> 20} MiB")
text = data.decode(charset or "utf-8", "replace")
if kind in TEXT:
    sys.stdout.write(text)
elif kind in HTML:
    try:
        import html2text
    except ImportError:
        fail(3, "converting HTML needs the html2text Python module (Debian: python3-html2text)")
    h = html2text.HTML2Text(baseurl=URI if URI.startswith(("http://", "https://")) else "")
    h.body_width = 0
    sys.stdout.write(h.handle(text).strip() + "\n")
else:
    fail(2, f"{kind} cannot be converted to Markdown here: HTML and plain text can")
