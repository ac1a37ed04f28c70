"""A stand-in webhook receiver for Grafana's alerts: prints every notification it receives.

The Docker stack sends alerts here unless GRAFANA_ALERT_WEBHOOK_URL points elsewhere, so that
`docker compose logs alert-sink` shows what Grafana would have sent. Standard library only.
"""

from __future__ import annotations

import json
import os
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class NotificationPrinter(BaseHTTPRequestHandler):
    def do_POST(self) -> None:  # noqa: N802 - the name http.server dispatches to
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        try:
            payload = json.loads(body)
            alerts = payload.get("alerts", [])
            print(f"{payload.get('status', '?')}: {payload.get('title', '')}", flush=True)
            for alert in alerts:
                labels = alert.get("labels", {})
                summary = alert.get("annotations", {}).get("summary", "")
                print(f"  [{alert.get('status')}] {labels.get('alertname')} {labels} {summary}", flush=True)
        except (ValueError, AttributeError):
            print(f"not JSON ({len(body)} bytes): {body[:200]!r}", flush=True)
        self.send_response(200)
        self.end_headers()

    def do_GET(self) -> None:  # noqa: N802 - health check
        self.send_response(200)
        self.end_headers()
        self.wfile.write(b"ok\n")

    def log_message(self, format: str, *args) -> None:  # noqa: A002 - keep stdout to the alerts
        pass


if __name__ == "__main__":
    port = int(os.environ.get("ALERT_SINK_PORT", "8000"))
    print(f"alert sink listening on :{port}", flush=True)
    ThreadingHTTPServer(("0.0.0.0", port), NotificationPrinter).serve_forever()
