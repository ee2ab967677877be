#!/usr/bin/env python3
"""Summarises testssl's flat JSON findings (--jsonfile) for each scanned listener and
exits non-zero when a listener offers a protocol other than TLS 1.2 and 1.3, lacks one
of them, or has any finding of severity MEDIUM, HIGH or CRITICAL, or when testssl
reported a scan error (WARN, FATAL) or produced no findings at all.

Usage: testssl_report.py NAME=FILE.json [NAME=FILE.json ...]

Two certificate findings are accepted (shown as ACCEPTED, never failing): they are about
the published development certificate the scan uses, not the TLS configuration. And one
WARN is a known race in testssl's use of `openssl s_client -sess_out`, shown as
INCONCLUSIVE: a TLS 1.3 server sends its session ticket after the handshake, and
s_client (its standard input empty) may leave before reading it.
"""

import json
import sys

FAILING = ("CRITICAL", "HIGH", "MEDIUM", "WARN", "FATAL")
ACCEPTED = {
    "cert_validityPeriod": "certs-example/server.crt is the published development "
    "certificate, valid for 10 years so that a checkout keeps working; deployments use "
    "their own (docs/deployment.md)",
    "cert_revocation": "the server certificate comes from the private scheme CA, which "
    "publishes no CRL or OCSP URL; agencies trust that CA alone",
}
INCONCLUSIVE = {
    ("sessionresumption_ticket", "check failed because of connect problem"),
}
ORDER = ("CRITICAL", "HIGH", "MEDIUM", "LOW", "WARN", "FATAL", "OK", "INFO", "DEBUG")
PROTOCOLS = {
    "SSLv2": False,
    "SSLv3": False,
    "TLS1": False,
    "TLS1_1": False,
    "TLS1_2": True,
    "TLS1_3": True,
}
# What the summary shows for each listener (when testssl reported it).
SHOWN = (
    "ALPN_HTTP2",
    "ALPN",
    "cipherlist_NULL",
    "cipherlist_aNULL",
    "cipherlist_EXPORT",
    "cipherlist_LOW",
    "cipherlist_3DES_IDEA",
    "cipherlist_AVERAGE",
    "cipherlist_STRONG",
    "PFS",
    "PFS_ciphers",
    "PFS_ECDHE_curves",
    "FS",
    "FS_ciphers",
    "FS_ECDHE_curves",
    "TLS_extensions",
    "TLS_session_ticket",
    "sessionresumption_ticket",
    "sessionresumption_ID",
    "secure_renego",
    "secure_client_renego",
    "CRIME_TLS",
    "BREACH",
    "heartbleed",
    "CCS",
    "ticketbleed",
    "ROBOT",
    "POODLE_SSL",
    "fallback_SCSV",
    "SWEET32",
    "FREAK",
    "DROWN",
    "LOGJAM",
    "BEAST",
    "LUCKY13",
    "RC4",
    "cert_keySize",
    "cert_signatureAlgorithm",
    "cert_chain_of_trust",
    "cert_trust",
)


def offered(finding):
    return finding.startswith("offered")


def check(name, path):
    try:
        with open(path, encoding="utf-8") as f:
            findings = json.load(f)
    except (OSError, ValueError) as e:
        return [f"{name}: no testssl findings ({e})"], []
    if isinstance(findings, dict):  # --jsonfile-pretty
        findings = [f for result in findings.get("scanResult", []) for f in result.get("findings", [])]
    if not findings:
        return [f"{name}: testssl produced no findings"], []
    by_id = {}
    for f in findings:
        by_id.setdefault(f.get("id", ""), []).append(f)
    problems = []
    lines = [f"-- {name}: {len(findings)} findings"]
    counts = {}
    for f in findings:
        counts[f.get("severity", "?")] = counts.get(f.get("severity", "?"), 0) + 1
    lines.append(
        "   severities: "
        + ", ".join(f"{s} {counts[s]}" for s in ORDER if s in counts)
    )
    protos = []
    for proto, wanted in PROTOCOLS.items():
        got = by_id.get(proto)
        if not got:
            problems.append(f"{name}: testssl did not report protocol {proto}")
            continue
        finding = got[0].get("finding", "")
        is_offered = offered(finding)
        protos.append(f"{proto} {'offered' if is_offered else 'not offered'}")
        if is_offered != wanted:
            problems.append(
                f"{name}: {proto} is {'offered' if is_offered else 'not offered'} ({finding})"
            )
    lines.append("   protocols: " + ", ".join(protos))
    for key in SHOWN:
        for f in by_id.get(key, []):
            lines.append(f"   {key:26} {f.get('severity', ''):8} {f.get('finding', '')}")
    for f in findings:
        if f.get("severity") not in FAILING:
            continue
        if f.get("id") in ACCEPTED:
            lines.append(
                f"   ACCEPTED {f.get('severity')} {f.get('id')}: {f.get('finding')} "
                f"({ACCEPTED[f['id']]})"
            )
        elif (f.get("id"), f.get("finding")) in INCONCLUSIVE:
            lines.append(
                f"   INCONCLUSIVE {f.get('id')}: {f.get('finding')} (s_client race, see above)"
            )
        else:
            problems.append(
                f"{name}: {f.get('severity')} {f.get('id')}: {f.get('finding')}"
                + (f" [{f['cve']}]" if f.get("cve") else "")
            )
    return problems, lines


def main(args):
    if not args:
        print(__doc__)
        return 2
    problems = []
    print("== testssl summary")
    for arg in args:
        name, _, path = arg.partition("=")
        found, lines = check(name, path)
        problems.extend(found)
        for line in lines:
            print(line)
    if problems:
        print(f"== testssl: {len(problems)} problem(s)")
        for p in problems:
            print(f"   FAIL {p}")
        return 1
    print("== testssl: only TLS 1.2 and 1.3, no finding of severity MEDIUM or worse")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
