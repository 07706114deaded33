"""Run a console script's ``main`` on a bad input and check that it fails the way every
entry point of this package must: exit status 2 and exactly one error line, no traceback."""
import pytest


def one_error_line(main, argv, capsys) -> str:
    """``main(argv)``: assert SystemExit 2 and one ``error:`` line on stderr without a
    traceback; return that line."""
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if "error:" in line]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]
