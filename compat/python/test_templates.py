"""E2B's Template builder against Warren, through the unmodified SDK.

A template built with `Template.build()` (a copied file, env vars, a RUN step and a start
command with a port ready check) starts sandboxes from its ready snapshot: the HTTP server
started at build time answers at once. A failing step and an unsupported base image end the
build with `BuildException`s that say which step failed or which images are supported.
"""

import uuid

import pytest
from e2b import Sandbox, Template, wait_for_port
from e2b.exceptions import BuildException


def _name(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def test_build_copy_env_run_start_and_create(tmp_path):
    (tmp_path / "index.html").write_text("hello from a template\n")
    template = (
        Template(file_context_path=tmp_path)
        .from_base_image()
        .copy("index.html", "/home/user/site/")
        .set_envs({"GREETING": "hi-from-env"})
        # The SDK sends a plain `pip install six` as root: bookworm's PEP 668 marker must not
        # refuse it (the image's /etc/pip.conf allows it).
        .pip_install("six")
        .run_cmd("echo built > /home/user/site/built.txt")
        .set_workdir("/home/user/site")
        .set_start_cmd("python3 -m http.server 8000", wait_for_port(8000))
    )
    logs = []
    name = _name("compat-web")
    info = Template.build(template, name, on_build_logs=logs.append)
    assert info.template_id
    # Build logs stream while polling: the server's own line about the start command.
    messages = [str(getattr(e, "message", "")) for e in logs]
    assert any("http.server" in m for m in messages), messages

    sbx = Sandbox.create(name, timeout=120)
    try:
        # The server was started before the snapshot: no wait, it answers now.
        page = sbx.commands.run("curl -s http://127.0.0.1:8000/index.html", timeout=20)
        assert page.stdout == "hello from a template\n"
        built = sbx.commands.run("cat /home/user/site/built.txt")
        assert built.stdout.strip() == "built"
        env = sbx.commands.run("echo $GREETING")
        assert env.stdout.strip() == "hi-from-env"
        six = sbx.commands.run("python3 -c 'import six; print(six.__name__)'")
        assert six.stdout.strip() == "six"
    finally:
        sbx.kill()


def test_failing_step_reports_step_and_exit_code():
    template = Template().from_base_image().run_cmd("echo about-to-fail; exit 7")
    with pytest.raises(BuildException) as exc:
        Template.build(template, _name("compat-fail"))
    text = str(exc.value)
    assert "7" in text, text


def test_unsupported_base_image_is_refused_clearly():
    template = Template().from_image("ubuntu:22.04").run_cmd("true")
    with pytest.raises(Exception) as exc:
        Template.build(template, _name("compat-ubuntu"))
    text = str(exc.value)
    assert "debian" in text.lower() or "e2bdev/base" in text, text
