"""`vitssl report`: a self-contained HTML page, checked as text and in a headless browser."""

import json
import re
import shutil
import subprocess

import pytest

from helpers import tiny_overrides
from vitssl.cli import main
from vitssl.commands.pretrain import pretrain
from vitssl.commands.report import build_report, group_metric_keys, summarise_metrics
from vitssl.config import load_config
from vitssl.engine.outputs import save_results
from vitssl.methods import method_configs


def tiny_run(run_dir, preset=None, method_name=None):
    overrides = tiny_overrides("digits", preset=preset, method=method_name)
    if method_name:
        overrides.append(f"method.name={method_name}")
    pretrain(load_config(preset, overrides, method_configs()), run_dir)
    return run_dir


@pytest.fixture(scope="module")
def dino_run(tmp_path_factory):
    run_dir = tiny_run(tmp_path_factory.mktemp("report") / "dino")
    save_results({"protocol": "knn", "checkpoint": str(run_dir), "temperature": 0.07,
                  "results": {"20": {"top1": 0.42, "top5": 0.9}}}, run_dir / "eval_knn.json")
    save_results({"protocol": "linear", "top1": 0.5, "top5": 0.95, "best_lr": 0.001}, run_dir / "eval_linear.json")
    save_results({"protocol": "segmentation", "miou": 0.31, "pixel_acc": 0.8}, run_dir / "eval_segmentation.json")
    save_results({"protocol": "finetune", "top1": 0.61, "history": [{"epoch": 0}]}, run_dir / "eval_finetune.json")
    return run_dir


def images_in(html):
    return re.findall(r"<img [^>]*src=\"([^\"]*)\"", html)


def test_report_is_self_contained_and_shows_every_part(dino_run, capsys):
    assert main(["report", str(dino_run), "--limit", "2"]) == 0
    page = dino_run / "report" / "report.html"
    assert str(page) in capsys.readouterr().out
    html = page.read_text()
    sources = images_in(html)
    pngs = sorted(p.name for p in (dino_run / "report").glob("*.png"))
    assert {"loss.png", "schedules.png", "throughput.png", "attention_000.png", "attention_001.png"} <= set(pngs)
    assert len(sources) == len(pngs) and all(s.startswith("data:image/png;base64,") for s in sources)
    assert not re.search(r"(src|href)=\"(?!data:)", html), "the page must not reference other files"
    for text in ("Training curves", "Attention maps", "eval_knn.json", "20-NN top-1 / top-5", "0.4200 / 0.9000",
                 "eval_linear.json", "eval_segmentation.json", "miou", "eval_finetune.json", "0.6100", "Resolved config", "median images/s"):
        assert text in html, text
    assert "Region correspondence" not in html  # DINO run: no correspondences
    assert "knn_top1: not logged (enable with train.knn_every_epochs=N" in html  # and said so, not drawn flat


def test_esvit_swin_report_skips_attention_and_draws_correspondences(tmp_path):
    run_dir = tiny_run(tmp_path / "esvit", preset="esvit_swin_tiny_w7")
    html = build_report(run_dir, limit=2, image_size=64).read_text()  # Swin stride 32: 2x2 regions
    assert "attention maps skipped" in html and "Swin" in html
    assert "Region correspondence" in html and "region correspondence (this report)" in html
    assert len(list((run_dir / "report").glob("correspondence_*.png"))) == 2
    assert len(images_in(html)) == len(list((run_dir / "report").glob("*.png")))


def test_report_of_a_folder_without_checkpoint_notes_what_is_missing(tmp_path):
    (tmp_path / "metrics.jsonl").write_text(json.dumps({"step": 1, "loss": 2.0, "lr": 1e-3}) + "\n")
    html = build_report(tmp_path).read_text()
    assert "no checkpoint.pt" in html and "no config.yaml" in html and len(images_in(html)) == 2
    assert main(["report", str(tmp_path / "nope")]) == 2


def test_metric_grouping_and_summary():
    rows = [{"step": 1, "loss": 3.0, "region_loss": 1.0, "lr": 0.1, "weight_decay": 0.04, "teacher_entropy": 5.0,
             "images_per_s": 10.0, "max_memory_gb": 1.5, "epoch": 0},
            {"step": 2, "loss": 2.0, "region_loss": 0.5, "lr": 0.2, "weight_decay": 0.05, "teacher_entropy": 4.0,
             "images_per_s": 30.0, "max_memory_gb": 2.5, "epoch": 0}]
    assert group_metric_keys(rows) == {"loss": ["loss", "region_loss"], "schedules": ["lr", "weight_decay"],
                                       "throughput": ["images_per_s", "max_memory_gb"],
                                       "other": []}  # teacher entropy: the learning curves
    summary = summarise_metrics(rows)
    assert summary["median images/s"] == "30.0" and summary["peak max_memory_gb"] == "2.50"
    assert summary["optimizer steps"] == "2" and summary["final loss"] == "2.0000"


# A headless browser loads the page; an inline script marks every image that decoded
# (naturalWidth > 0) and writes the counts into the title, which --dump-dom returns.
MARK_IMAGES = """<script>
window.addEventListener("load", () => {
  const imgs = Array.from(document.images);
  imgs.forEach(im => im.setAttribute("data-loaded", im.complete && im.naturalWidth > 0 ? "yes" : "no"));
  document.title = "loaded " + imgs.filter(im => im.naturalWidth > 0).length + " of " + imgs.length;
});
</script>"""


def chromium_binary():
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        if shutil.which(name):
            return shutil.which(name)
    return None


@pytest.mark.skipif(chromium_binary() is None, reason="no chromium binary on PATH (Debian: apt-get install chromium)")
def test_every_figure_renders_in_a_headless_browser(dino_run, tmp_path):
    html = build_report(dino_run, limit=2).read_text()
    n_images = len(images_in(html))
    checked = tmp_path / "checked.html"
    checked.write_text(html.replace("</body>", MARK_IMAGES + "\n</body>"))
    cmd = [chromium_binary(), "--headless", "--disable-gpu", "--no-sandbox", f"--user-data-dir={tmp_path / 'profile'}",
           "--virtual-time-budget=5000", "--dump-dom", checked.as_uri()]
    dom = subprocess.run(cmd, capture_output=True, text=True, timeout=120).stdout
    assert f"<title>loaded {n_images} of {n_images}</title>" in dom, dom[:300]
    assert dom.count('data-loaded="yes"') == n_images >= 5


def test_learning_curves_show_the_logged_knn_and_teacher_information(tmp_path):
    """A run that logs online k-NN (every epoch) and the teacher's statistics: both series, with
    the values metrics.jsonl holds, in the page and as figures; nothing reported as not logged."""
    overrides = [*tiny_overrides("digits"), "train.epochs=2", "train.knn_every_epochs=1", "train.knn_data=digits",
                 "train.knn_k=5"]
    run_dir = tmp_path / "run"
    pretrain(load_config(None, overrides, method_configs()), run_dir)
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    knn = [(r["step"], r["knn_top1"]) for r in rows if "knn_top1" in r]
    info = [(r["step"], r["teacher_mutual_info"]) for r in rows if "teacher_mutual_info" in r]
    assert [step for step, _ in knn] == [2, 4] and len(info) == 4
    html = build_report(run_dir, pictures=False).read_text()
    section = html.split("<h2>Learning curves</h2>")[1].split("<h2>")[0]
    for key, points in (("knn_top1", knn), ("teacher_mutual_info", info)):
        table = section.split(f"<code>{key}</code>")[1].split("</table>")[0]
        assert re.findall(r"<tr><td>(\d+)</td><td>([-\d.]+)</td></tr>", table) == [
            (str(step), f"{value:.4f}") for step, value in points]
    assert "not logged" not in section
    assert {p.name for p in (run_dir / "report").glob("*.png")} >= {"knn.png", "teacher.png"}
    assert "Online k-NN top-1" in html and len(images_in(html)) == len(list((run_dir / "report").glob("*.png")))
    assert summarise_metrics(rows)["final loss"] == f"{[r for r in rows if 'loss' in r][-1]['loss']:.4f}"
