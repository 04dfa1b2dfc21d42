"""medsft.errors: the mistakes a user can fix, catchable both as such and as the Python API's
usual ValueError."""

from __future__ import annotations

import pytest

from medsft.data.sources import DataNotFound, EmptySource, InvalidExample
from medsft.errors import ConfigError, InputError, UserError
from medsft.hub import HubUnreachable


@pytest.mark.parametrize("error", [ConfigError, InputError, InvalidExample, EmptySource])
def test_setting_and_input_mistakes_are_value_errors_too(error):
    with pytest.raises(ValueError) as caught:
        raise error("data.csv:3: field 'answer': empty")
    assert isinstance(caught.value, UserError)


@pytest.mark.parametrize(
    ("error", "also"), [(DataNotFound, FileNotFoundError), (HubUnreachable, OSError)]
)
def test_missing_files_and_hubs_keep_their_builtin_kind(error, also):
    assert issubclass(error, UserError) and issubclass(error, also)
    assert not issubclass(UserError, ValueError)  # an environment problem is no bad value
