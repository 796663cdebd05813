"""Loads a bare checkpoint into a model that is already wrapped in DDP."""
import torch
from torch.nn.modules.utils import consume_prefix_in_state_dict_if_present


def load_into_ddp(ddp_model, path):
    state = torch.load(path, map_location="cpu")
    ddp_model.load_state_dict({"module." + k: v for k, v in state.items()})


def load_into_bare(model, path):
    state = torch.load(path, map_location="cpu")
    consume_prefix_in_state_dict_if_present(state, "module.")
    model.load_state_dict(state)
