"""Hugging Face style fine-tuning loop: BatchEncoding moves itself, the loss list does not."""
import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer


def finetune(texts, labels, device="cpu", epochs=2):
    tokenizer = AutoTokenizer.from_pretrained("bert-base-uncased")
    model = AutoModelForSequenceClassification.from_pretrained("bert-base-uncased", num_labels=2)
    model.to(device)
    batch = tokenizer(texts, padding=True, return_tensors="pt")
    batch.to(device)
    targets = torch.tensor(labels, device=device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=2e-5)
    step_losses = []
    for _ in range(epochs):
        outputs = model(**batch, labels=targets)
        outputs.loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        step_losses.append(outputs.loss)
    return step_losses
