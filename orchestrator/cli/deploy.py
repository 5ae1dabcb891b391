"""`odorch serve`, `odorch deploy` and `odorch endpoints`: models behind an endpoint."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import click

from odorch.cli.common import device_option, pick_device

STOP_GRACE_S = 10.0  # Ctrl-C waits this long for the requests in flight to be answered


@click.command()
@click.argument("run", type=click.Path(exists=True, path_type=Path))
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to listen on; any other than loopback lets the network call the model (no authentication).")
@click.option("--port", type=click.IntRange(0, 65535), default=8080, show_default=True, help="Port (0: a free one, printed).")
@click.option("--max-body-mb", type=click.FloatRange(0, min_open=True), default=10.0, show_default=True,
              help="Refuse larger request bodies (413) without reading them.")
@click.option("--max-images", type=click.IntRange(1), default=None,
              help="Images per request; more get 413 before any is decoded (default: ODORCH_MAX_IMAGES or 32).")
@click.option("--max-pixels", type=click.IntRange(1), default=None,
              help="Pixels per image, read from its header; more get 413 before decoding "
                   "(default: ODORCH_MAX_PIXELS or 40000000).")
@click.option("--threads", type=click.IntRange(1), default=None,
              help="Connections served at once; more get 503 at once (default: 16).")
@click.option("--deadline", type=click.FloatRange(0, min_open=True), default=None, metavar="SECONDS",
              help="A connection still open this long after it was accepted is closed (default: 300).")
@device_option
def serve(run: Path, host: str, port: int, max_body_mb: float, max_images: int | None, max_pixels: int | None,
          threads: int | None, deadline: float | None, device: str = "auto") -> None:
    """Serve RUN's model on a local endpoint with SageMaker's contract: GET /ping, POST /invocations.

    RUN is a job folder, a model folder or an exported OpenVINO folder. Requests and responses are
    those of `odorch deploy`'s endpoint (same handler: entrypoints/inference.py). Ctrl-C stops it.
    """
    from odorch.runs import model_dir
    from odorch.runtime.models import ModelError
    from odorch.serve import LOOPBACK, make_server

    if host not in LOOPBACK:
        click.echo(f"warning: listening on {host}: whoever reaches this machine can call the model (no authentication)",
                   err=True)
    try:
        server = make_server(model_dir(run), host=host, port=port, max_body_mb=max_body_mb,
                             device=str(pick_device(device)), max_threads=threads, deadline_s=deadline,
                             max_images=max_images, max_pixels=max_pixels)
    except ModelError as e:
        raise click.ClickException(str(e)) from e
    except OSError as e:
        raise click.ClickException(f"cannot listen on {host}:{port} ({e.strerror or e}); "
                                   "choose another --port (0: a free one)") from e
    click.echo(f"serving {server.model['config']['model']} ({', '.join(server.model['classes'])}) from {run} "
               f"(device {server.model['device']}) on {server.url}")
    click.echo(f"try: curl -H 'Content-Type: image/jpeg' --data-binary @IMAGE.jpg {server.url}/invocations")
    click.echo("Ctrl-C stops it")
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        cut = server.stop(grace_s=STOP_GRACE_S)
        if cut:  # their threads would run into interpreter shutdown inside torch: leave without it
            click.echo(f"stopped; {cut} request(s) in flight were cut off")
            sys.stdout.flush()
            os._exit(0)
        click.echo("stopped")


@click.command()
@click.argument("run", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--instance", required=True, metavar="TYPE", help="Endpoint instance type, e.g. ml.g4dn.xlarge (ml. may be left out).")
@click.option("--bucket", required=True, help="S3 bucket for model.tar.gz (in the endpoint's region).")
@click.option("--role", required=True, help="IAM role ARN SageMaker assumes to pull the model.")
@click.option("--region", help="AWS region (default: boto3's, e.g. AWS_DEFAULT_REGION).")
@click.option("--endpoint-name", help="Endpoint name (default: odorch-<job>).")
@click.option("--no-wait", is_flag=True, help="Return once the endpoint is being created.")
@click.option("--image", metavar="URI", help="Serving image (default: the PyTorch inference DLC of the region; "
              "give one for a region odorch's table lacks).")
def deploy(run: Path, instance: str, bucket: str, role: str, region: str | None, endpoint_name: str | None, no_wait: bool,
           image: str | None) -> None:
    """Serve RUN's model on a SageMaker real-time endpoint (it bills per hour until deleted).

    Writes RUN/endpoint.json. Anything created is deleted again if the deploy fails or is interrupted.
    """
    from odorch import deploy as backend
    from odorch.aws import AwsClients

    clients = AwsClients.from_env(region)
    region = region or clients.region
    backend.preflight_deploy(clients, run, instance_type=instance, bucket=bucket, role=role, region=region, image=image)
    try:
        record = backend.deploy(clients, run, instance_type=instance, bucket=bucket, role=role, region=region,
                                image=image, endpoint_name=endpoint_name, wait=not no_wait, echo=click.echo)
    except KeyboardInterrupt:
        click.echo("interrupted: what was created has been deleted", err=True)
        sys.exit(130)
    click.echo(f"endpoint {record['name']} {record['status']} on {record['instance']} ({record['arn']})")
    click.echo(f"wrote {run / backend.ENDPOINT_FILE}")
    click.echo(f"next: odorch predict --endpoint {record['name']} IMAGE... --out DIR")
    click.echo(f"it bills until deleted: odorch endpoints delete {record['name']}")


@click.group()
def endpoints() -> None:
    """List and delete SageMaker endpoints made by `odorch deploy`."""


@endpoints.command("list")
@click.option("--all", "all_endpoints", is_flag=True, help="Also endpoints without the odorch:job tag.")
@click.option("--region", help="AWS region (default: boto3's).")
@click.option("--json", "as_json", is_flag=True, help="Print the list as JSON.")
def endpoints_list(all_endpoints: bool, region: str | None, as_json: bool) -> None:
    """Endpoints with status, instance type, creation time and job."""
    from odorch.aws import AwsClients
    from odorch.deploy import list_endpoints

    rows = list_endpoints(AwsClients.from_env(region), all_endpoints=all_endpoints)
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    if not rows:
        click.echo("no endpoints")
        return
    header = ("name", "status", "instance", "created", "job")
    table = [header] + [tuple(str(r.get(k) or "") for k in header) for r in rows]
    widths = [max(len(row[i]) for row in table) for i in range(len(header))]
    for row in table:
        click.echo("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip())


@endpoints.command("delete")
@click.argument("name")
@click.option("--region", help="AWS region (default: boto3's).")
def endpoints_delete(name: str, region: str | None) -> None:
    """Delete endpoint NAME, its endpoint config and its model (what is already gone is skipped)."""
    from odorch.aws import AwsClients
    from odorch.deploy import delete_endpoint

    deleted = delete_endpoint(AwsClients.from_env(region), name)
    if not deleted:
        click.echo(f"nothing to delete: no endpoint {name}")
        return
    for item in deleted:
        click.echo(f"deleted {item}")


# ---------------------------------------------------------------- tune
