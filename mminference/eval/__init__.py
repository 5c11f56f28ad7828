"""Evaluation: multiple-choice video QA (Video-MME conventions), V-NIAH / MM-NIAH generators and the
dense-vs-sparse agreement report.

    items = load_tasks("videomme.jsonl")                  # or make_vniah(...), make_mmniah(...)
    model, encoder = load_model("/models/Qwen2.5-VL-7B-Instruct")   # a local checkpoint
    report = compare_dense_sparse(model, encoder, items, "auto", num_frames=64)
    print(report.format(by=["duration", "domain", "task_type"]))
"""

from .compare import compare_dense_sparse
from .encoders import ProcessorEncoder, PromptEncoder, measure_tokens_per_frame
from .heatmap import niah_grid, plot_niah_heatmap
from .models import load_model, tiny_model
from .niah import make_mmniah, make_vniah, render_word
from .prompts import extract_answer, question_text
from .report import AgreementReport, ComparisonRow, ItemResult, Reply, accuracy, accuracy_by, kl_divergence
from .runner import evaluate, generate_reply
from .tasks import LETTERS, MCQItem, TaskError, TextPart, VideoPart, load_tasks
from .tiny_encoder import TinyQwenEncoder
from .video_io import VideoDecodeError, read_video, sample_indices

__all__ = ["AgreementReport", "ComparisonRow", "ItemResult", "LETTERS", "MCQItem", "ProcessorEncoder",
           "PromptEncoder", "Reply", "TaskError", "TextPart", "TinyQwenEncoder", "VideoDecodeError", "VideoPart",
           "accuracy", "accuracy_by", "compare_dense_sparse", "evaluate", "extract_answer", "generate_reply",
           "kl_divergence", "load_model", "load_tasks", "make_mmniah", "make_vniah", "measure_tokens_per_frame",
           "niah_grid", "plot_niah_heatmap", "question_text", "read_video", "render_word", "sample_indices", "tiny_model"]
