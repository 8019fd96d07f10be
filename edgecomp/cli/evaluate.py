"""`edgecomp evaluate`: top-1/top-5 accuracy of a model or a compress OUTDIR on a data spec.

An OUTDIR is scored through its model.onnx in ONNX Runtime, which runs no code from the directory;
only an OUTDIR without one is rebuilt in PyTorch (its recipe's code runs only with --trust-code).
"""

from __future__ import annotations

import click

from edgecomp.cli.common import COUNT, emit, json_option, model_options, trust_code_option


@click.command("evaluate")
@click.argument("target", metavar="OUTDIR_OR_MODEL")
@model_options
@trust_code_option
@click.option("--data", "data_spec", required=True, help="Labelled data, e.g. fashion-mnist:test.")
@click.option("--batch-size", type=COUNT, default=256, show_default=True)
@json_option
def command(target, weights, trust_pickle, input_shape, trust_code, data_spec, batch_size, as_json):
    """Top-1 / top-5 accuracy of OUTDIR_OR_MODEL on --data."""
    from edgecomp.data import load_dataset
    from edgecomp.errors import UserInputError
    from edgecomp.finetune import evaluate
    from edgecomp.runtime.onnx_module import evaluation_module

    module, engine = evaluation_module(target, weights, trust_pickle=trust_pickle, trust_code=trust_code)
    data = load_dataset(data_spec)
    if not data.has_labels:
        raise UserInputError(f"{data_spec} has no labels: accuracy needs labelled data")
    result = evaluate(module, data, batch_size=batch_size)
    result = {"model": target, "data": data_spec, "evaluated_with": engine, **result}
    emit(result, as_json, lambda r: click.echo(f"top-1 {r['top1']:.4f}  top-5 {r['top5']:.4f}  on {r['n']} samples of {data_spec}"))
