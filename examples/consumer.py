#!/usr/bin/env python3
"""A receiving service's consumer in Python with pika (see docs/consuming.md).

Manual acknowledgements, prefetch 10, deduplication by message_id (the referral id),
ack only after the referral is handed over (here: written to OUT/<referral-id>.json),
reject without requeue (to the dead-letter queue) when a message is not a referral.

    pip install pika
    python3 examples/consumer.py --agency coventry-cmht --out received/ [--max N] [--idle-exit S]
"""
import argparse
import json
import os
import sys
import uuid

import pika


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--amqp-url", default="amqp://guest:guest@127.0.0.1:5672/%2f")
    parser.add_argument("--namespace", default="")
    parser.add_argument("--agency", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--max", type=int, default=None)
    parser.add_argument("--idle-exit", type=float, default=None,
                        help="stop when no message arrived for this many seconds")
    args = parser.parse_args()

    os.makedirs(args.out, exist_ok=True)
    prefix = f"{args.namespace}." if args.namespace else ""
    queue = f"{prefix}referrals.{args.agency}"

    connection = pika.BlockingConnection(pika.URLParameters(args.amqp_url))
    channel = connection.channel()
    channel.basic_qos(prefetch_count=10)
    handled = 0

    for method, properties, body in channel.consume(
        queue, auto_ack=False, inactivity_timeout=args.idle_exit
    ):
        if method is None:  # idle for --idle-exit seconds
            break
        referral_id = properties.message_id or ""
        kind = properties.type or "referral"  # or follow_up / withdrawal about a referral
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
            if not os.path.exists(target):
                with open(target, "wb") as f:
                    f.write(body)
                print(f"received {kind} {referral_id}", file=sys.stderr)
            channel.basic_ack(method.delivery_tag)
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
