#!/usr/bin/env python3
"""Minimal external.metrics.k8s.io/v1beta1 server used by smoke.sh.

It proves the aggregation-layer wiring of the e2e cluster: kube-apiserver proxies
/apis/external.metrics.k8s.io/... to this process through an ExternalName Service
pointing at localhost, authenticating with the front-proxy client certificate
(verified here against the front-proxy CA) and passing the caller in X-Remote-User.
Every metric has the constant value given by --value. Standard library only.

Usage: fake_external_metrics.py --port P --cert C --key K --client-ca CA [--value 42]
"""
import argparse
import http.server
import json
import ssl
import sys

GV = "external.metrics.k8s.io/v1beta1"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--cert", required=True)
    ap.add_argument("--key", required=True)
    ap.add_argument("--client-ca", required=True)
    ap.add_argument("--value", default="42")
    args = ap.parse_args()

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 (http.server API)
            path = self.path.split("?", 1)[0].rstrip("/")
            parts = path.split("/")
            sys.stderr.write(f"GET {self.path} user={self.headers.get('X-Remote-User')}\n")
            if path == "/apis/" + GV:
                body = {"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": GV,
                        "resources": [{"name": "*", "singularName": "", "namespaced": True,
                                       "kind": "ExternalMetricValueList", "verbs": ["get"]}]}
            elif path.startswith(f"/apis/{GV}/namespaces/") and len(parts) == 7:
                body = {"kind": "ExternalMetricValueList", "apiVersion": GV, "metadata": {},
                        "items": [{"metricName": parts[6], "metricLabels": {},
                                   "timestamp": "2026-01-01T00:00:00Z", "value": args.value}]}
            else:
                self.send_error(404)
                return
            data = json.dumps(body).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(args.cert, args.key)
    ctx.load_verify_locations(args.client_ca)
    ctx.verify_mode = ssl.CERT_REQUIRED  # only the apiserver's front-proxy client may call
    server = http.server.HTTPServer(("127.0.0.1", args.port), Handler)
    server.socket = ctx.wrap_socket(server.socket, server_side=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
