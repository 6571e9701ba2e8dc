"""The script a user would write from the transformers and peft docs: LoRA sentiment fine-tuning with a plain
`transformers.Trainer`, no peftkit. `benchmarks/vs_trainer.py` runs it against `peftkit train` on the same rows.

    python benchmarks/reference/trainer_peft.py --model PATH --train train.csv --test test.csv --out DIR

CSV files with `text` and `label` columns. Prints one JSON line: test accuracy, training samples/s, steps.
"""

import argparse
import json

import numpy as np
from datasets import load_dataset
from peft import LoraConfig, TaskType, get_peft_model
from transformers import (
    AutoModelForSequenceClassification,
    AutoTokenizer,
    DataCollatorWithPadding,
    Trainer,
    TrainingArguments,
)

parser = argparse.ArgumentParser()
parser.add_argument("--model", required=True)
parser.add_argument("--train", required=True)
parser.add_argument("--test", required=True)
parser.add_argument("--out", required=True)
parser.add_argument("--seed", type=int, default=42)
args = parser.parse_args()

data = load_dataset("csv", data_files={"train": args.train, "test": args.test})
labels = sorted(set(data["train"]["label"]))
label2id = {name: i for i, name in enumerate(labels)}
tokenizer = AutoTokenizer.from_pretrained(args.model)


def encode(batch):
    encoded = tokenizer(batch["text"], truncation=True, max_length=96)
    encoded["labels"] = [label2id[name] for name in batch["label"]]
    return encoded


data = data.map(encode, batched=True, remove_columns=data["train"].column_names)

model = AutoModelForSequenceClassification.from_pretrained(
    args.model, num_labels=len(labels), id2label=dict(enumerate(labels)), label2id=label2id)
lora = LoraConfig(task_type=TaskType.SEQ_CLS, r=8, lora_alpha=16, lora_dropout=0.1,
                  target_modules=["query", "key", "value", "dense"])
model = get_peft_model(model, lora)


def accuracy(prediction):
    return {"accuracy": float((np.argmax(prediction.predictions, axis=-1) == prediction.label_ids).mean())}


training_args = TrainingArguments(
    output_dir=args.out,
    num_train_epochs=1,
    per_device_train_batch_size=32,
    per_device_eval_batch_size=128,
    learning_rate=1e-3,
    warmup_steps=0.06,
    lr_scheduler_type="linear",
    weight_decay=0.01,
    eval_strategy="no",
    save_strategy="no",
    logging_steps=25,
    report_to=[],
    seed=args.seed,
)
trainer = Trainer(model=model, args=training_args, train_dataset=data["train"],
                  data_collator=DataCollatorWithPadding(tokenizer), compute_metrics=accuracy)
train_output = trainer.train()
test = trainer.evaluate(data["test"], metric_key_prefix="test")
model.save_pretrained(args.out)
print(json.dumps({"accuracy": test["test_accuracy"], "steps": train_output.global_step,
                  "train_samples_per_second": train_output.metrics["train_samples_per_second"]}))
