"""Every training name the top level maps to openformers.training is there, under the reference's name."""

import transformers
import transformers.optimization
import transformers.trainer_callback
import transformers.trainer_utils

import openformers
import openformers.training


def test_every_training_name_of_the_top_level_exists():
    names = [name for name, module in openformers._MODULE_OF.items() if module == "openformers.training"]
    assert names
    for name in names:
        assert getattr(openformers, name) is getattr(openformers.training, name), name
        homes = (transformers, transformers.trainer_callback, transformers.trainer_utils, transformers.optimization)
        assert any(hasattr(home, name) for home in homes), f"{name} is not a name of the reference"


def test_the_training_package_exports_what_it_lists():
    for name in openformers.training.__all__:
        assert hasattr(openformers.training, name), name
