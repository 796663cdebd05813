"""Moving modules works in place; moving parameters one by one does not."""
import torch


def to_device(model, device):
    for module in model.modules():
        module.to(device)
    for _name, param in model.named_parameters():
        param.to(device)
    return model


def move_all(models, device):
    for m in (models["encoder"], models["decoder"]):
        m.cuda()
    buffer = torch.zeros(10)
    buffer.to(device)
    return buffer
