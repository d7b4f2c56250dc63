"""Numeric options are checked on the command line: a value out of range, NaN or
infinite is a usage error (status 2) naming the option and the range, before
any file is read (the model and program named here do not exist)."""

from __future__ import annotations

import pytest

from cimc.cli import main

COMPILE = ["compile", "missing.onnx", "-o", "prog.s"]
RUN = ["run", "missing.onnx", "--inputs", "x.npy", "--outputs", "y.npy"]
SIM = ["sim", "missing.s"]

BAD = {
    "replicate negative": (COMPILE, "--replicate", "-1"),
    "replicate nan": (COMPILE, "--replicate", "nan"),
    "replicate above the chip": (COMPILE, "--replicate", "1.5"),
    "place-time-limit negative": (COMPILE, "--place-time-limit", "-5"),
    "place-time-limit zero": (COMPILE, "--place-time-limit", "0"),
    "place-time-limit inf": (COMPILE, "--place-time-limit", "inf"),
    "place-effort negative": (COMPILE, "--place-effort", "-1"),
    "place-effort nan": (COMPILE, "--place-effort", "nan"),
    "place-effort above 100": (COMPILE, "--place-effort", "101"),
    "stream zero": (COMPILE, "--stream", "0"),
    "stream fraction": (COMPILE, "--stream", "2.5"),
    "count zero": (COMPILE, "--count", "0"),
    "count negative": (COMPILE, "--count", "-3"),
    "run replicate nan": (RUN, "--replicate", "nan"),
    "run stream negative": (RUN, "--stream", "-1"),
    "run place-time-limit nan": (RUN, "--place-time-limit", "nan"),
    "sim adc-bits zero": (SIM, "--adc-bits", "0"),
    "sim adc-bits 33": (SIM, "--adc-bits", "33"),
    "sim noise negative": (SIM, "--noise", "-0.1"),
    "sim noise inf": (SIM, "--noise", "inf"),
    "sim seed negative": (SIM, "--seed", "-1"),
    "sim max-steps zero": (SIM, "--max-steps", "0"),
    "sim max-steps word": (SIM, "--max-steps", "many"),
}


@pytest.mark.parametrize(("command", "option", "value"), BAD.values(), ids=BAD.keys())
def test_a_bad_number_is_a_usage_error_naming_the_option(
        command: list[str], option: str, value: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main([*command, option, value]) == 2
    err = capsys.readouterr().err
    message = err.splitlines()[-1]
    assert f"argument {option}: " in message and "give a" in message, err
    assert "Traceback" not in err


GOOD = {
    "replicate": (COMPILE, "--replicate", "0.9", "replicate", 0.9),
    "replicate off": (COMPILE, "--replicate", "0", "replicate", 0.0),
    "place-time-limit": (COMPILE, "--place-time-limit", "0.5", "place_time_limit", 0.5),
    "place-effort": (RUN, "--place-effort", "0.5", "place_effort", 0.5),
    "stream": (RUN, "--stream", "3", "stream", 3),
    "count": (COMPILE, "--count", "7", "count", 7),
    "adc-bits": (SIM, "--adc-bits", "32", "adc_bits", 32),
    "noise": (SIM, "--noise", "0", "noise", 0.0),
    "seed": (SIM, "--seed", "0", "seed", 0),
}


@pytest.mark.parametrize(("command", "option", "value", "attribute", "parsed"), GOOD.values(),
                         ids=GOOD.keys())
def test_a_number_in_range_is_accepted(command: list[str], option: str, value: str,
                                       attribute: str, parsed: float) -> None:
    from cimc.cli import build_parser

    args = build_parser().parse_args([*command, option, value])
    assert getattr(args, attribute) == parsed
