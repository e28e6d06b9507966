"""The browser app behind `magvit2-app` (Gradio): a Generate tab (prompts -> videos, with the unmasking shown step by
step) and a Tokenizer tab (a clip -> its reconstruction, PSNR/SSIM, code map, codebook usage).

Only `ui.py` imports gradio (the optional `app` extra); the work it shows lives in gradio-free modules that call
the same functions as the commands, so the app writes what `magvit2-generate` writes:

* `models.py`     what `--model` / `--tokenizer` name, loaded once (the resolvers of `trainers.model_sources`);
* `generation.py` checked requests -> `trainers.commands.generate.iter_generate` -> mp4 + GIF + `samples.jsonl`
                  line + the `magvit2-generate` command that reproduces it;
* `unmasking.py`  the codes after each unmasking step (the pipeline's `callback_on_step_end`) -> a strip and a
                  one-frame-per-step video;
* `tokenizer_view.py` an upload -> `trainers.commands.reconstruct` -> side by side, metrics, code map;
* `ui.py`         the page and the server (one model call at a time through a bounded queue).
"""
