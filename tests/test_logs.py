import io
import json
import logging
from collections.abc import Iterator

import pytest

from exporter.logs import configure_logging


@pytest.fixture
def restore_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


def emit(fmt: str, level: str = "info", secrets: tuple[str, ...] = ()) -> str:
    stream = io.StringIO()
    configure_logging(level, fmt, secrets, stream=stream)
    log = logging.getLogger("exporter.test")
    log.debug("hidden at info")
    log.warning(
        "poll failed",
        extra={
            "workspace": "prod",
            "app": "ios",
            "status": "401",
            "error": 'Invalid "key" s3cr3t\nsecond line',
        },
    )
    return stream.getvalue()


@pytest.mark.usefixtures("restore_logging")
def test_logfmt_one_line_per_event_with_fields() -> None:
    (line,) = emit("logfmt").splitlines()
    assert line.startswith("ts=")
    assert line.endswith(
        'level=warning logger=exporter.test msg="poll failed" workspace=prod app=ios '
        'status=401 error="Invalid \\"key\\" s3cr3t\\nsecond line"'
    )


@pytest.mark.usefixtures("restore_logging")
def test_json_format() -> None:
    (line,) = emit("json").splitlines()
    event = json.loads(line)
    assert event["msg"] == "poll failed"
    assert event["level"] == "warning"
    assert event["workspace"] == "prod"
    assert event["ts"].endswith("Z")


@pytest.mark.usefixtures("restore_logging")
def test_secrets_are_masked_wherever_they_appear() -> None:
    text = emit("logfmt", secrets=("s3cr3t",))
    assert "s3cr3t" not in text
    assert "<redacted>" in text


@pytest.mark.usefixtures("restore_logging")
def test_level_filters() -> None:
    assert "hidden at info" in emit("logfmt", level="debug")
    assert emit("logfmt", level="error") == ""


@pytest.mark.usefixtures("restore_logging")
def test_exceptions_stay_on_one_line() -> None:
    stream = io.StringIO()
    configure_logging("info", "logfmt", stream=stream)
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        logging.getLogger("exporter.test").exception("poll failed unexpectedly")
    (line,) = stream.getvalue().splitlines()
    assert "RuntimeError: boom" in line


QUOTED = 'k"ey\\with-quote-and-backslash'
LONG = "long-" + "0123456789abcdef" * 19  # 309 characters


@pytest.mark.parametrize("fmt", ["logfmt", "json"])
@pytest.mark.parametrize("secret", [QUOTED, LONG], ids=["quote-backslash", "long"])
@pytest.mark.usefixtures("restore_logging")
def test_secrets_are_masked_before_escaping(fmt: str, secret: str) -> None:
    # Escaping for logfmt or JSON turns `"` into `\"` and `\` into `\\`: a secret masked only
    # in the finished line would come through escaped.
    stream = io.StringIO()
    configure_logging("info", fmt, (secret,), stream=stream)
    logging.getLogger("exporter.test").warning(
        "echoed %s", secret, extra={"error": f'proxy said "Bearer {secret}"\n', "count": 3}
    )
    (line,) = stream.getvalue().splitlines()
    escaped = (json.dumps(secret)[1:-1], secret.replace("\\", "\\\\").replace('"', '\\"'))
    for piece in (secret, *escaped, secret[:8], secret[-8:]):
        assert piece not in line
    assert line.count("<redacted>") == 2
    if fmt == "json":
        event = json.loads(line)
        assert event["msg"] == "echoed <redacted>"
        assert event["error"] == 'proxy said "Bearer <redacted>"\n'
        assert event["count"] == 3  # numbers stay numbers


@pytest.mark.usefixtures("restore_logging")
def test_a_secret_holding_another_is_masked_whole() -> None:
    stream = io.StringIO()
    configure_logging("info", "logfmt", ("abc", "abcdef-longer"), stream=stream)
    logging.getLogger("exporter.test").warning("x", extra={"error": "abcdef-longer and abc"})
    assert 'error="<redacted> and <redacted>"' in stream.getvalue()
