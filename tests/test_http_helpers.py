"""Shared by the HTTP API tests: a real forsund per test module and a tiny HTTP client.

The client is ``http.client`` on a fresh connection per request, so a test sees the raw
status and body (urllib would raise on anything but 2xx and hide what we check). This
module holds no tests; the ``test_`` prefix only keeps it among the HTTP test files. Each
test module declares its own fixtures from :func:`running_daemon`.
"""

import http.client
import json
from typing import Any, Dict, Iterator, Optional, Tuple, Union

from conftest import Forsund

Body = Union[bytes, str, Dict[str, Any], None]


def running_daemon(tmp_path_factory: Any, *args: str) -> Iterator[Forsund]:
    """A forsund with the HTTP API for a module-scoped fixture; it must stop cleanly."""
    forsund = Forsund(str(tmp_path_factory.mktemp("forsund-http")), list(args), http=True)
    forsund.start()
    yield forsund
    assert forsund.stop() == 0, forsund.log


def check_envelope(status: int, raw: bytes) -> Dict[str, Any]:
    """Asserts the SPEC section 3 envelope and returns it decoded."""
    assert status == 200, (status, raw[:300])
    answer = json.loads(raw)
    assert isinstance(answer, dict) and set(answer) == {"errcode", "errmsg", "data"}, answer
    assert isinstance(answer["errcode"], int) and isinstance(answer["errmsg"], str)
    if answer["errcode"]:
        assert answer["data"] == {} and answer["errmsg"], answer
    else:
        assert answer["errmsg"] == "", answer
    return answer


class Api:
    """Requests to one forsund's HTTP API."""

    def __init__(self, port: int, timeout: float = 10):
        self.port = port
        self.timeout = timeout

    def raw(self, method: str, path: str, body: Body = None,
            headers: Optional[Dict[str, str]] = None) -> Tuple[int, Dict[str, str], bytes]:
        if isinstance(body, dict):
            body = json.dumps(body)
        if isinstance(body, str):
            body = body.encode("utf-8")
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=self.timeout)
        try:
            connection.request(method, path, body=body, headers=headers or {})
            response = connection.getresponse()
            return response.status, dict(response.getheaders()), response.read()
        finally:
            connection.close()

    def call(self, method: str, path: str, body: Body = None,
             headers: Optional[Dict[str, str]] = None) -> Dict[str, Any]:
        """The envelope of the answer, checked."""
        status, _, raw = self.raw(method, path, body, headers)
        return check_envelope(status, raw)

    def ok(self, method: str, path: str, body: Body = None,
           headers: Optional[Dict[str, str]] = None) -> Any:
        """The data of an answer that must succeed."""
        answer = self.call(method, path, body, headers)
        assert answer["errcode"] == 0, answer
        return answer["data"]

    def error(self, errcode: int, method: str, path: str, body: Body = None,
              headers: Optional[Dict[str, str]] = None) -> str:
        """The errmsg of an answer that must fail with ``errcode``."""
        answer = self.call(method, path, body, headers)
        assert answer["errcode"] == errcode, answer
        return answer["errmsg"]

    def crontab(self, method: str, text: str) -> Dict[str, Any]:
        return self.call(method, "/v1/plan", text, {"Content-Type": "application/crontab"})

    def alive(self) -> bool:
        return self.ok("GET", "/v1/ping") == {}


class AnswerSchemas:
    """Validates answers against the OpenAPI document the server itself serves.

    OpenAPI 3.1 schemas are JSON Schema 2020-12, so jsonschema checks them directly; the
    document is registered whole so its ``#/components/...`` references resolve.
    """

    URI = "urn:forsun:openapi"

    def __init__(self, document: Dict[str, Any]):
        from jsonschema import Draft202012Validator
        from referencing import Registry, Resource
        from referencing.jsonschema import DRAFT202012

        self.document = document
        self.registry = Registry().with_resource(
            self.URI, Resource(contents=document, specification=DRAFT202012))
        self.validator_class = Draft202012Validator
        self._validators: Dict[Tuple[str, str], Any] = {}

    def pointer(self, path: str, method: str) -> str:
        """JSON pointer to the answer schema of ``method path``; the Error schema if the
        document has no such operation (unknown routes and methods)."""
        operation = self.document["paths"].get(path, {}).get(method.lower())
        if operation is None:
            return "/components/schemas/Error"
        escaped = path.replace("~", "~0").replace("/", "~1")
        return "/paths/%s/%s/responses/200/content/application~1json/schema" % (
            escaped, method.lower())

    def validate(self, path: str, method: str, answer: Any) -> None:
        key = (path, method.upper())
        if key not in self._validators:
            schema = {"$ref": "%s#%s" % (self.URI, self.pointer(path, method))}
            self._validators[key] = self.validator_class(schema, registry=self.registry)
        self._validators[key].validate(answer)
