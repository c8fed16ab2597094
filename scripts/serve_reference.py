"""The reference server of the load test: the kind of app the source documents deploy
(FastAPI + a Transformers pipeline, one process), answering TEI's /predict shape.

    python scripts/serve_reference.py MODEL_DIR PORT THREADS
"""
import sys

import torch
import uvicorn
from fastapi import FastAPI
from pydantic import BaseModel
from transformers import pipeline

model_dir, port, threads = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
torch.set_num_threads(threads)
classifier = pipeline("text-classification", model=model_dir, top_k=None, device="cpu")
app = FastAPI()


class PredictRequest(BaseModel):
    inputs: str


@app.get("/health")
def health():
    return {}


@app.post("/predict")
def predict(req: PredictRequest):
    # top_k=None: every label, best first, as TEI answers.
    scores = classifier(req.inputs)
    if scores and isinstance(scores[0], list):  # some versions nest a single input
        scores = scores[0]
    return [{"score": s["score"], "label": s["label"]} for s in scores]


if __name__ == "__main__":
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning")
