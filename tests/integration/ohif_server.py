"""OHIF v3 (the built app from the ``@ohif/app`` npm tarball) served with a same-origin proxy to
Orthanc's DICOMweb, for the viewer test. ``make ohif`` unpacks the app into ``.cache/ohif``.
"""

from __future__ import annotations

import json
import mimetypes
import threading
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
OHIF_VERSION = "3.13.2"
OHIF_DIST = REPO / ".cache" / "ohif" / "package" / "dist"
mimetypes.add_type("application/wasm", ".wasm")
mimetypes.add_type("text/javascript", ".js")


def app_config(origin: str) -> str:
    """``window.config``: one DICOMweb data source, the proxy on this same origin."""
    root = f"{origin}/dicom-web"
    config = {
        "routerBasename": "/",
        "extensions": [],
        "modes": [],
        "showStudyList": True,
        "maxNumberOfWebWorkers": 2,
        "showWarningMessageForCrossOrigin": False,
        "showCPUFallbackMessage": False,
        "defaultDataSourceName": "orthanc",
        "dataSources": [{
            "namespace": "@ohif/extension-default.dataSourcesModule.dicomweb",
            "sourceName": "orthanc",
            "configuration": {
                "friendlyName": "Orthanc (test)", "name": "orthanc",
                "wadoUriRoot": f"{origin}/wado", "qidoRoot": root, "wadoRoot": root,
                "qidoSupportsIncludeField": False, "imageRendering": "wadors", "thumbnailRendering": "wadors",
                "enableStudyLazyLoad": True, "supportsFuzzyMatching": False, "supportsWildcard": True,
                "omitQuotationForMultipartRequest": True, "bulkDataURI": {"enabled": True},
            },
        }],
    }
    return "window.config = " + json.dumps(config) + ";\n"


class OhifServer:
    """Static OHIF + ``/dicom-web`` and ``/wado`` proxied to ``upstream`` (Orthanc's HTTP root)."""

    def __init__(self, dist: Path, upstream: str) -> None:
        self.dist, self.upstream = dist, upstream.rstrip("/")
        self.errors: list[str] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:  # quiet
                pass

            def do_GET(self) -> None:  # noqa: N802
                path = self.path.split("?", 1)[0]
                if path.startswith(("/dicom-web", "/wado")):
                    return self._proxy()
                if path == "/app-config.js":
                    return self._send(200, app_config(server.url).encode(), "text/javascript")
                file = (server.dist / path.lstrip("/")).resolve()
                if not file.is_file() or server.dist not in file.parents:
                    file = server.dist / "index.html"  # the app's own routes (/viewer, ...)
                kind = mimetypes.guess_type(file.name)[0] or "application/octet-stream"
                self._send(200, file.read_bytes(), kind)

            def _proxy(self) -> None:
                headers = {k: v for k, v in self.headers.items() if k.lower() in ("accept", "range")}
                request = urllib.request.Request(server.upstream + self.path, headers=headers)
                try:
                    with urllib.request.urlopen(request, timeout=60) as resp:
                        body = resp.read()
                        self._send(resp.status, body, resp.headers.get("Content-Type", "application/octet-stream"))
                except urllib.error.HTTPError as exc:
                    server.errors.append(f"{exc.code} {self.path}")
                    self._send(exc.code, exc.read(), exc.headers.get("Content-Type", "text/plain"))

            def _send(self, status: int, body: bytes, kind: str) -> None:
                self.send_response(status)
                self.send_header("Content-Type", kind)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self) -> "OhifServer":
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
