"""``unlearnctl sample``: generate images as PNG files (one per image, plus ``grid.png``)."""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from .common import console, handle_errors, load_registry
from .options import (
    ChannelsLastFlag,
    CompileFlag,
    DeviceOption,
    JsonFlag,
    ModelOption,
    SampleFolderOption,
    SeedOption,
)
from .verify_cmd import NoVerifyFlag


def register(app: typer.Typer) -> None:
    """Add ``sample`` to the ``unlearnctl`` app."""

    @app.command("sample")
    @handle_errors
    def sample_command(
        out: SampleFolderOption,
        model: ModelOption = "ddpm-digits",
        class_: Annotated[
            str | None,
            typer.Option("--class", "-c", help="Class id or name (default: every class evenly, one grid row each)."),
        ] = None,
        num: Annotated[int, typer.Option("--num", "-n", help="Number of images.")] = 64,
        seed: SeedOption = 0,
        sampler: Annotated[str, typer.Option("--sampler", help="ddim or ddpm.")] = "ddim",
        steps: Annotated[int, typer.Option("--steps", help="Denoising steps.")] = 50,
        guidance: Annotated[float, typer.Option("--guidance", "-w", help="Classifier-free guidance w (0: off).")] = 2.0,
        eta: Annotated[float, typer.Option("--eta", help="DDIM eta (0: deterministic).")] = 0.0,
        batch_size: Annotated[
            int,
            typer.Option(
                "--batch-size",
                help="Images per forward pass; under a launcher, the unit of work each process takes "
                "(docs/scaling.md).",
            ),
        ] = 256,
        device: DeviceOption = "auto",
        channels_last: ChannelsLastFlag = False,
        compile: CompileFlag = False,
        no_verify: NoVerifyFlag = False,
        json_output: JsonFlag = False,
    ) -> None:
        """Generate images from a model: one PNG per image, grid.png and samples.json in --out.

        Example: unlearnctl sample --model ddpm-digits --class 3 --num 64 --out samples/3

        Under `torchrun` or `accelerate launch` the batches are shared among the processes; the files are
        the same as with one process (docs/scaling.md).
        """
        from pydantic import ValidationError

        from ..commands.sample import Streamed, check_out_folder, sample_to_folder, write_json_object
        from ..distributed import init_world
        from ..errors import UsageError
        from ..inputs import load_model
        from ..runtime import resolve_device
        from ..sampling import SampleOptions, resolve_model_class

        try:
            options = SampleOptions(
                sampler=sampler,
                steps=steps,
                guidance=guidance,
                eta=eta,
                batch_size=batch_size,
                channels_last=channels_last,
                compile=compile,
            )
        except ValidationError as exc:
            err = exc.errors(include_url=False)[0]
            flag = str(err["loc"][0]).replace("_", "-")
            raise UsageError(f"--{flag}: got {err.get('input')!r}: {err['msg']}") from None
        if num < 1:
            raise UsageError(f"--num must be >= 1, got {num}")
        check_out_folder(out)
        # under a launcher: this process's place and device (cuda:LOCAL_RANK); one process: unchanged
        world, resolved = init_world(resolve_device(device))
        registry = load_registry()
        loaded = load_model(model, registry)
        class_id = resolve_model_class(loaded, class_) if class_ is not None else None
        result = sample_to_folder(
            loaded, out, num, class_id, options, seed, resolved, model_spec=model, registry=registry, world=world
        )
        if not world.is_main:  # the main process reports
            return
        if json_output:  # written path by path: a large --num is never one string in memory
            files = Streamed(str(p) for p in result.files)
            payload = {"out": str(result.out), "files": files, "seconds": result.seconds}
            write_json_object(sys.stdout.write, payload, ensure_ascii=False, default=str)
            sys.stdout.write("\n")
            return
        what = f"class {class_}" if class_ is not None else ("every class" if loaded.conditional else "unconditional")
        console.print(
            f"wrote {len(result.files)} images ({what}) and {result.out / 'grid.png'} "
            f"in {result.seconds:.1f} s ({options.sampler}, {options.steps} steps, guidance {options.guidance})"
        )
