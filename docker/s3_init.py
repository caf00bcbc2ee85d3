"""One-shot bucket set-up for the compose stack (the `s3-init` service).

Creates the bucket named by ``ECHO_S3_BUCKET`` when it is missing and puts lifecycle expiry on
the short-lived prefixes (``jobs/``, ``uploads/``), so rendered audio does not pile up. Settings
come from the same ``StorageSettings`` the API and worker use; the worker also creates the bucket
itself when missing, so this service only makes the API ready before the first worker is up.

    python docker/s3_init.py --expire-days 7
"""

from __future__ import annotations

import argparse
import sys
import time

from jobs.settings import SettingsError, StorageSettings
from jobs.storage import S3Storage, TransientStorageError

EXPIRING_PREFIXES = ("jobs/", "uploads/")  # DESIGN §4: lifecycle expiry for jobs/ and uploads/


def lifecycle_rules(expire_days: int) -> dict:
    """The bucket lifecycle configuration: expire each short-lived prefix after ``expire_days``."""
    rules = [
        {
            "ID": f"expire-{prefix.rstrip('/')}",
            "Filter": {"Prefix": prefix},
            "Status": "Enabled",
            "Expiration": {"Days": expire_days},
        }
        for prefix in EXPIRING_PREFIXES
    ]
    return {"Rules": rules}


def init_bucket(storage: S3Storage, *, expire_days: int, attempts: int, delay_s: float) -> None:
    """Create the bucket and its lifecycle rules, retrying while the server is still starting."""
    for attempt in range(1, attempts + 1):
        try:
            storage.ensure_bucket()
            break
        except TransientStorageError as exc:
            if attempt == attempts:
                raise
            print(f"s3-init: storage not ready ({exc}); retry {attempt}/{attempts}", file=sys.stderr)
            time.sleep(delay_s)
    if expire_days > 0:
        storage.client.put_bucket_lifecycle_configuration(
            Bucket=storage.bucket, LifecycleConfiguration=lifecycle_rules(expire_days)
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--expire-days", type=int, default=7, help="expire jobs/ and uploads/ after N days (0: never)")
    parser.add_argument("--attempts", type=int, default=30)
    parser.add_argument("--delay", type=float, default=2.0, help="seconds between attempts")
    args = parser.parse_args(argv)
    try:
        settings = StorageSettings.from_env()
    except SettingsError as exc:
        print(f"s3-init: {exc}", file=sys.stderr)
        return 2
    if settings.backend != "s3":
        print("s3-init: ECHO_S3_ENDPOINT_URL is not set; nothing to do", file=sys.stderr)
        return 2
    init_bucket(S3Storage(settings), expire_days=args.expire_days, attempts=args.attempts, delay_s=args.delay)
    print(f"s3-init: bucket {settings.bucket!r} ready at {settings.endpoint_url}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
