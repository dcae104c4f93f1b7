"""
athens-py's home templates render as Go's html/template does: the real Go toolchain renders every case
(tests/data/gotemplate/main.go) and the output must match byte for byte, errors included.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from athens.web.gotemplate import TemplateError, parse
from tests.gotool import go_binary, offline_build_env, run

HARNESS = Path(__file__).parent / "data" / "gotemplate"

CASES: list[tuple[str, dict]] = [
    ("GOPROXY={{ .Host }},direct{{ if .NoSumPatterns }}\nGONOSUMDB={{ .NoSumPatterns }}{{ end }}",
     {"Host": "http://proxy:3000", "NoSumPatterns": "corp.example.com/*,x"}),
    ("GOPROXY={{ .Host }},direct{{ if .NoSumPatterns }}\nGONOSUMDB={{ .NoSumPatterns }}{{ end }}",
     {"Host": "http://proxy:3000", "NoSumPatterns": ""}),
    ('<p title="{{ .S }}">{{ .S }}</p>', {"S": "<script>\"x\" & 'y' + \u0000</script>"}),
    ("a  {{- .A -}}  b\n{{- /* a comment\n over lines */ -}}\n c {{/* plain */}}d", {"A": "A"}),
    ("{{ if .A }}a{{ else if .B }}b{{ else if .C }}c{{ else }}none{{ end }}", {"C": "yes"}),
    ("{{ if .A }}a{{ else if .B }}b{{ else }}none{{ end }}", {}),
    ("{{ with .User }}{{ .Name }} of {{ $.Org }}{{ else }}nobody{{ end }}", {"User": {"Name": "ann"}, "Org": "o<"}),
    ("{{ with .User }}{{ .Name }}{{ else }}nobody{{ end }}", {"User": {}}),
    ("{{ range .L }}[{{ . }} {{ $.T }}]{{ else }}empty{{ end }}", {"L": ["a", "b<"], "T": "t"}),
    ("{{ range .L }}[{{ . }}]{{ else }}empty{{ end }}", {"L": []}),
    ("{{ range .M }}{{ . }},{{ end }}", {"M": {"b": "2", "a": "1", "c": "3"}}),
    ("{{ range .Fills }}{{ .Path }}@{{ .Version }};{{ end }}", {"Fills": [{"Path": "x/y", "Version": "v1"}, {"Path": "z", "Version": "v2"}]}),
    ("[{{ .Missing }}]{{ if .Missing }}yes{{ else }}no{{ end }}", {}),
    ("{{ .B }} {{ .F }} {{ .N }} {{ .L }} {{ .Nil }}", {"B": True, "F": False, "N": 3, "L": ["x", "y"], "Nil": None}),
    ("{{ if not .A }}not-a{{ end }} {{ if and .A .B }}ab{{ end }} {{ if or .A .B }}a-or-b{{ end }}", {"B": "b"}),
    ("{{ and .A .B }}|{{ or .A .B }}|{{ or .Z .B }}", {"A": "a", "B": "b", "Z": ""}),
    ('{{ if eq .S "x" }}is-x{{ end }}{{ if eq .S "y" "x" }} one-of{{ end }}{{ if ne .S "z" }} not-z{{ end }}', {"S": "x"}),
    ("{{ len .L }} {{ len .S }} {{ if (and .S (not .Z)) }}paren{{ end }}", {"L": [1, 2, 3], "S": "abcd", "Z": ""}),
    ('{{ "lit\\"eral<" }} {{ `raw\\n` }} {{ 42 }} {{ true }}', {}),
    ("{{if .A}}{{.A}}{{end}}{{-3}}", {"A": "a"}),
    ("{{ .User.Name }}", {"User": {"Name": "n"}}),
]
CASES += [
    ("{{ .Missing.X }}", {}),
    ("{{ .S.X }}", {"S": "s"}),
    ("{{ if }}x{{ end }}", {}),
    ("{{ end }}", {}),
    ("{{ if .A }}x", {}),
    ("{{ .A", {}),
    ("{{ range .S }}x{{ end }}", {"S": "abc"}),
    ("{{ len .N }}", {"N": 3}),
    ("{{ with .A }}a{{ else with .B }}b:{{ . }}{{ else }}c{{ end }}", {"B": "bee"}),
    ("x{{/* unclosed }}y", {}),
]
#: What Go has and athens-py refuses with a clear error (Go renders these).
UNSUPPORTED = [
    '{{ printf "%s" .Host }}',
    "{{ .Host | html }}",
    "{{ $x := .Host }}{{ $x }}",
    '{{ define "x" }}y{{ end }}',
    '{{ template "x" }}',
    "{{ range $i, $e := .L }}{{ end }}",
]


@pytest.fixture(scope="module")
def go_rendered(tmp_path_factory) -> list[dict[str, str]]:
    """Every case rendered by Go (one build of the harness)."""
    work = tmp_path_factory.mktemp("gotemplate")
    # The standard library only; the user's build cache, when there is one, saves compiling html/template again.
    cache = Path(os.environ.get("GOCACHE") or Path.home() / ".cache" / "go-build")
    env = offline_build_env(work, work / "modcache", cache if cache.is_dir() else work / "gocache")
    binary = work / "render"
    run([go_binary(), "build", "-o", str(binary), "."], HARNESS, env, timeout=600)
    cases = json.dumps([{"template": t, "data": d} for t, d in CASES])
    done = subprocess.run([str(binary)], input=cases, capture_output=True, text=True, check=True, timeout=60)
    return json.loads(done.stdout)


@pytest.mark.parametrize("index", range(len(CASES)))
def test_renders_as_go_does(index, go_rendered):
    template, data = CASES[index]
    expected = go_rendered[index]
    try:
        ours, error = parse(template).render(data), ""
    except TemplateError as e:
        ours, error = "", str(e)
    if expected["err"]:
        assert error, f"Go refuses {template!r} ({expected['err']}); we rendered {ours!r}"
    else:
        assert not error, f"Go renders {template!r} as {expected['out']!r}; we failed: {error}"
        assert ours == expected["out"]


@pytest.mark.parametrize("template", UNSUPPORTED)
def test_what_athens_py_does_not_support_is_an_error_naming_the_line(template):
    with pytest.raises(TemplateError, match=r"^line 2: "):
        parse("<p>\n" + template)
