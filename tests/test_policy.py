"""Download modes, Athens' download file, GOPRIVATE-style patterns and the filter file."""

from __future__ import annotations

import base64

import pytest

from athens.filter import Action, FilterError, parse_filter
from athens.policy import DownloadPolicy, Mode, PolicyError, load_policy, match_patterns, parse_download_file

ATHENS_EXAMPLE = '''
downloadURL = "https://proxy.golang.org"

mode = "async_redirect"

download "github.com/gomods/*" {
    mode = "sync"
}

download "golang.org/x/*" {
    mode = "none"
}

download "github.com/pkg/*" {
    mode = "redirect"
    downloadURL = "https://gocenter.io"
}
'''


def test_athens_download_file_example():
    policy = parse_download_file(ATHENS_EXAMPLE)
    assert policy.for_module("github.com/gomods/athens") == (Mode.SYNC, "https://proxy.golang.org")
    assert policy.for_module("golang.org/x/mod") == (Mode.NONE, "https://proxy.golang.org")
    assert policy.for_module("github.com/pkg/errors") == (Mode.REDIRECT, "https://gocenter.io")
    assert policy.for_module("example.com/other") == (Mode.ASYNC_REDIRECT, "https://proxy.golang.org")


def test_first_match_wins_and_comments():
    policy = parse_download_file('''
    # comment
    mode = "sync" // another
    /* block
       comment */
    download "example.com/a/*,example.com/b" { mode = "none" }
    download "example.com/*" { mode = "async" }
    ''')
    assert policy.for_module("example.com/a/x/y")[0] is Mode.NONE
    assert policy.for_module("example.com/b")[0] is Mode.NONE
    assert policy.for_module("example.com/c")[0] is Mode.ASYNC
    assert policy.for_module("other.com/c")[0] is Mode.SYNC


@pytest.mark.parametrize(
    "patterns, path, expected",
    [("github.com/org/*", "github.com/org/repo", True), ("github.com/org/*", "github.com/org/repo/sub/v2", True),
     ("github.com/org/*", "github.com/org", False), ("github.com/org", "github.com/org/x", True),
     ("*.corp.example.com", "git.corp.example.com/x", True), ("github.com/o?g", "github.com/org/x", True),
     ("github.com/org", "github.com/organisation", False), (" , ", "x.com", False)],
)
def test_goprivate_patterns(patterns, path, expected):
    assert match_patterns(patterns, path) is expected


@pytest.mark.parametrize(
    "text, message",
    [('mode = "fast"', "unknown mode 'fast'"), ('mode = sync', "line 1: variables \\(sync\\) are not allowed"), ('download "x" { }', "has no mode"),
     ('colour = "red"', "unknown setting 'colour'"), ('download "x" { mode = "sync" ', "unexpected end"),
     ('mode = "sync" $', r"line 1: unexpected '\$'")],
)
def test_download_file_errors_say_where(text, message):
    with pytest.raises(PolicyError, match=message):
        parse_download_file(text)


def test_download_mode_values(tmp_path):
    assert load_policy("async") == DownloadPolicy(Mode.ASYNC)
    (tmp_path / "d.hcl").write_text(ATHENS_EXAMPLE)
    assert load_policy(f"file:{tmp_path / 'd.hcl'}").mode is Mode.ASYNC_REDIRECT
    custom = "custom:" + base64.b64encode(ATHENS_EXAMPLE.encode()).decode()
    assert load_policy(custom).for_module("golang.org/x/mod")[0] is Mode.NONE
    with pytest.raises(PolicyError, match="no downloadURL"):
        load_policy("redirect")
    with pytest.raises(PolicyError, match="base64"):
        load_policy("custom:!!!")
    with pytest.raises(PolicyError, match="download file"):
        load_policy(f"file:{tmp_path / 'missing.hcl'}")


FILTER = """
# the default: exclude everything not named
-
+ github.com/allowed
- github.com/allowed/secret
D github.com/direct
+ github.com/versioned v1.2,~2.3.4,^3.1.0,<0.5.0
"""


def test_filter_most_specific_wins():
    f = parse_filter(FILTER)
    assert f.action("github.com/other/x") is Action.EXCLUDE
    assert f.action("github.com/allowed/x", "v1.0.0") is Action.INCLUDE
    assert f.action("github.com/allowed/secret/v2", "v2.0.0") is Action.EXCLUDE
    assert f.action("github.com/direct/thing") is Action.DIRECT


@pytest.mark.parametrize(
    "version, included",
    [("v1.2.0", True), ("v1.2.9", True), ("v1.20.0", False), ("v2.3.4", True), ("v2.3.9", True), ("v2.4.0", False),
     ("v2.3.3", False), ("v3.1.0", True), ("v3.9.0", True), ("v4.0.0", False), ("v0.4.9", True), ("v0.5.0", False)],
)
def test_filter_version_qualifiers(version, included):
    f = parse_filter(FILTER)
    assert (f.action("github.com/versioned", version) is Action.INCLUDE) is included


def test_filter_qualified_rules_do_not_hide_lists():
    f = parse_filter("- github.com/a v1.0\n")
    assert f.action("github.com/a", "v1.0.3") is Action.EXCLUDE
    assert f.action("github.com/a", "") is Action.INCLUDE


@pytest.mark.parametrize("text", ["? github.com/x", "+ a b c d", "+ github.com/x 1.2"])
def test_filter_errors(text):
    with pytest.raises(FilterError, match="line 1"):
        parse_filter(text)


def test_every_download_file_athens_reads():
    """Athens decodes it as HCL with no variables or functions: heredocs, templates and constant expressions too."""
    policy = parse_download_file('''
/* Athens' example, written every way HCL allows */
downloadURL = "https://${"proxy"}.golang.org"   # a template
mode = <<EOT
async_redirect
EOT
download "github.com/gomods/*" {
    mode = true ? "sync" : "none"
}
download "golang.org/x/*" { mode = "n\\u006fne" }  // an escape
download "github.com/pkg/*" {
    mode = <<-EOT
        redirect
        EOT
    downloadURL = "https://gocenter.io${""}"
}
download "example.com/${1 + 1}" { mode = (1 < 2) && !false ? "async" : "sync" }
''')
    assert policy.for_module("github.com/gomods/athens") == (Mode.SYNC, "https://proxy.golang.org")
    assert policy.for_module("golang.org/x/mod") == (Mode.NONE, "https://proxy.golang.org")
    assert policy.for_module("github.com/pkg/errors") == (Mode.REDIRECT, "https://gocenter.io")
    assert policy.for_module("example.com/2/x")[0] is Mode.ASYNC
    assert policy.for_module("example.com/other") == (Mode.ASYNC_REDIRECT, "https://proxy.golang.org")


@pytest.mark.parametrize(
    "text, message",
    [('mode = "sync"\n\nmode = "none"\n', "line 3: mode is set twice \\(first on line 1\\)"),
     ('mode = "sync"\ndownload "x" {\n  mode = upper("none")\n}\n', "line 3: function calls"),
     ('download "x" {\n  mode = <<EOT\n  none\n', "line 2: heredoc <<EOT is not closed"),
     ('mode = "sync"\ndownloadURL = "https://x\\ny"\n', "line 2: downloadURL .* holds spaces"),
     ('mode = 1 + "a"\n', "line 1: \\+ needs numbers"),
     ('download "x" "y" { mode = "sync" }\n', "line 1: a download block has one label"),
     ('mode = "sync"\ndownload "x" {\n  mode = "sync"\n  download "y" { mode = "none" }\n}\n',
      "line 4: blocks do not nest"),
     ('mode = "${"sync"\n', "line 1: an interpolation \\$\\{...} is not closed"),
     ('mode = 3\n', "line 1: mode must be a string")],
)
def test_download_file_mistakes_name_their_line(text, message):
    with pytest.raises(PolicyError, match=f"download file, {message}"):
        parse_download_file(text)
