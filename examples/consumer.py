#!/usr/bin/env python3
"""A receiving service's consumer in Python with pika (see docs/consuming.md).

Manual acknowledgements, prefetch 10, deduplication by message_id (the referral id),
ack only after the referral is handed over (here: written to OUT/<referral-id>.json),
reject without requeue (to the dead-letter queue) when a message is not a referral.

    pip install pika
    python3 examples/consumer.py \
        --amqp-url 'amqps://prod.coventry-cmht:PASSWORD@broker.example:5671/%2f' \
        --namespace prod --agency coventry-cmht --queue referrals --out received/ \
        [--max N] [--idle-exit S]

`--queue status` reads a sending agency's status.<agency> queue instead (status events,
written to OUT/status/<message-id>.json).
"""
import argparse
import json
import os
import ssl
import sys
import uuid

import pika


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--amqp-url", default="amqp://guest:guest@127.0.0.1:5672/%2f")
    parser.add_argument("--namespace", default="")
    parser.add_argument("--agency", required=True)
    parser.add_argument("--queue", choices=["referrals", "status"], default="referrals")
    parser.add_argument("--out", required=True)
    parser.add_argument("--max", type=int, default=None)
    parser.add_argument("--idle-exit", type=float, default=None,
                        help="stop when no message arrived for this many seconds")
    args = parser.parse_args()

    os.makedirs(args.out, exist_ok=True)
    prefix = f"{args.namespace}." if args.namespace else ""
    queue = f"{prefix}{args.queue}.{args.agency}"

    params = pika.URLParameters(args.amqp_url)
    if params.ssl_options is not None and params.ssl_options.server_hostname is None:
        # amqps://: verify the broker's certificate against the system's roots, and its name.
        params.ssl_options = pika.SSLOptions(ssl.create_default_context(), params.host)
    connection = pika.BlockingConnection(params)
    channel = connection.channel()
    channel.basic_qos(prefetch_count=10)
    handled = 0
    print(f"reading queue {queue}", file=sys.stderr)

    for method, properties, body in channel.consume(
        queue, auto_ack=False, inactivity_timeout=args.idle_exit
    ):
        if method is None:  # idle for --idle-exit seconds
            break
        referral_id = properties.message_id or ""
        kind = properties.type or "referral"  # or follow_up / withdrawal about a referral
        if args.queue == "status":
            if kind != "status" or not referral_id or "/" in referral_id:
                print(f"rejecting {referral_id!r} ({kind}): not understood", file=sys.stderr)
                channel.basic_reject(method.delivery_tag, requeue=False)
                continue
            status_dir = os.path.join(args.out, "status")
            os.makedirs(status_dir, exist_ok=True)
            target = os.path.join(status_dir, f"{referral_id}.json")
            if not os.path.exists(target):
                with open(target, "wb") as f:
                    f.write(body)
                print(f"received status {referral_id}", file=sys.stderr)
                handled += 1
            channel.basic_ack(method.delivery_tag)
            if args.max is not None and handled >= args.max:
                break
            continue
        try:
            if kind == "referral":
                uuid.UUID(referral_id)
            elif kind not in ("follow_up", "withdrawal") or not referral_id or "/" in referral_id:
                raise ValueError("message type")
            if properties.content_type != "application/json":
                raise ValueError("content type")
            json.loads(body)
        except ValueError:
            print(f"rejecting {referral_id!r} ({kind}): not understood", file=sys.stderr)
            channel.basic_reject(method.delivery_tag, requeue=False)
            continue
        if kind != "referral":
            updates = os.path.join(args.out, "updates")
            os.makedirs(updates, exist_ok=True)
            target = os.path.join(updates, f"{referral_id}.{kind}.json")
            new = not os.path.exists(target)
            if new:
                with open(target, "wb") as f:
                    f.write(body)
                print(f"received {kind} {referral_id}", file=sys.stderr)
            channel.basic_ack(method.delivery_tag)
            # A new follow-up or withdrawal counts towards --max as a referral does.
            if new:
                handled += 1
                if args.max is not None and handled >= args.max:
                    break
            continue
        target = os.path.join(args.out, f"{referral_id}.json")
        if os.path.exists(target):
            print(f"duplicate {referral_id}: already handed over", file=sys.stderr)
            channel.basic_ack(method.delivery_tag)
            continue
        partial = target + ".partial"
        with open(partial, "wb") as f:
            f.write(body)
            f.flush()
            os.fsync(f.fileno())
        os.replace(partial, target)
        channel.basic_ack(method.delivery_tag)
        print(f"received referral {referral_id}", file=sys.stderr)
        handled += 1
        if args.max is not None and handled >= args.max:
            break

    channel.cancel()
    connection.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
