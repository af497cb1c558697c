"""`scoperun image build|push-nodes`: build the images runs use, copy them to swarm nodes."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.markup import escape

from scoperun.cli.common import EXIT_ENGINE, EXIT_REJECTED, JsonOpt, err, fail, is_quiet, out, safe, settings_of
from scoperun.errors import EngineError

if TYPE_CHECKING:
    from scoperun.config import Settings

app = typer.Typer(no_args_is_help=True, help="Build the images runs use.")


@app.command("build")
def image_build(
    ctx: typer.Context,
    base: Annotated[str | None, typer.Option(help=(
        "Base image (default: the one the image was last built from, else python:3.11-slim-bookworm if "
        "present, else scoperun-base:bookworm)."))] = None,
    ca_bundle: Annotated[Path | None, typer.Option(help=(
        "Extra CA bundle (PEM) trusted during the build, for TLS-intercepting proxies (default: the one "
        "the image was last built with, else the system bundle)."))] = None,
    tag: Annotated[str | None, typer.Option(help="Image tag (default: the configured image).")] = None,
    force: Annotated[bool, typer.Option("--force", help="Rebuild even when the inputs are unchanged.")] = False,
    browser: Annotated[bool, typer.Option("--browser", help="Build the browser image (FROM the runner image; --base defaults to it).")] = False,
    dry_run: Annotated[bool, typer.Option(
        "--dry-run", help="Say whether a build is needed and with which inputs; build nothing.")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Build the runner (or --browser) image; skipped when an image with the same inputs exists.

    Bare, it reuses the inputs the image was built with (e.g. by `make image` or `scoperun demo`),
    so it rebuilds only when the Dockerfile, the base image or the CA bundle changed.
    """
    from scoperun.engine.docker import DockerBackend
    from scoperun.engine.images import ImageKind, build_image, default_base_image, remembered_inputs

    settings = settings_of(ctx)
    if ca_bundle is not None and not ca_bundle.is_file():
        raise fail(f"CA bundle {ca_bundle} does not exist", EXIT_REJECTED)
    kind: ImageKind = "browser" if browser else "runner"
    tag = tag or (settings.browser_image if browser else settings.image)
    quiet = as_json or is_quiet(ctx)
    engine = DockerBackend(settings.docker_host, remove_in_background=False, timeout=600)
    try:
        if base is None or ca_bundle is None:
            default_base = settings.image if browser else (base or default_base_image(engine))
            remembered = remembered_inputs(engine, kind=kind, tag=tag, default_base=default_base)
            base = base or remembered.base_image
            ca_bundle = ca_bundle or remembered.ca_bundle
        progress = None if quiet else (lambda line: err.print(f"[dim]{escape(line)}[/]", highlight=False))
        result = build_image(engine, kind=kind, base_image=base, tag=tag, ca_bundle=ca_bundle, force=force,
                             progress=progress, dry_run=dry_run)
    except EngineError as exc:
        raise fail(str(exc), EXIT_ENGINE) from None
    finally:
        engine.close()
    if as_json:
        sys.stdout.write(json.dumps(result.__dict__, indent=2) + "\n")
        return
    if result.skipped:
        verb = "up to date (build skipped)"
    else:
        verb = "needs a build (dry run: nothing built)" if result.dry_run else "built"
    inputs = f"base {result.base_image}, CA bundle {result.ca_bundle or 'none'}"
    out.print(f"[green]{safe(result.tag)}[/] {verb}: {safe(result.image_id or '-')} inputs "
              f"{result.inputs_hash[:12]} ({safe(inputs)})", highlight=False)


@app.command("push-nodes")
def image_push_nodes(
    ctx: typer.Context,
    to: Annotated[list[str], typer.Option("--to", help="A node's engine address, e.g. ssh://admin@worker-1 or unix:///run/docker-2.sock (repeatable).")],
    image: Annotated[list[str] | None, typer.Option("--image", help="Image to copy (repeatable; default: the runner image).")] = None,
) -> None:
    """Copy images to swarm nodes without a registry: `docker save | docker -H NODE load` per node."""
    from scoperun.engine.swarmops import push_image
    from scoperun.errors import ScopeRunError

    settings = settings_of(ctx)
    for name in image or [settings.image]:
        try:
            done = push_image(name, to, source_host=settings.docker_host)
        except ScopeRunError as exc:
            raise fail(str(exc), EXIT_ENGINE) from None
        for host in done:
            out.print(f"[green]{escape(name)}[/] loaded on {escape(host)}")


def ensure_image(settings: Settings, *, quiet: bool) -> None:
    """Build the runner image when it is missing (for `scoperun demo`)."""
    from scoperun.engine.docker import DockerBackend
    from scoperun.engine.images import build_image, default_base_image, remembered_inputs

    engine = DockerBackend(settings.docker_host, remove_in_background=False, timeout=600)
    try:
        if engine.image_info(settings.image) is not None:
            return
        if not quiet:
            err.print(f"image {settings.image} is missing; building it (a few minutes the first time)...")
        inputs = remembered_inputs(engine, kind="runner", tag=settings.image, default_base=default_base_image(engine))
        build_image(engine, tag=settings.image, base_image=inputs.base_image, ca_bundle=inputs.ca_bundle,
                    progress=None if quiet else (lambda line: err.print(f"[dim]{escape(line)}[/]", highlight=False)))
    except EngineError as exc:
        raise fail(str(exc), EXIT_ENGINE) from None
    finally:
        engine.close()


def register(root: typer.Typer) -> None:
    """Add the `image` group to the main app."""
    root.add_typer(app, name="image")
