"""The phases the bundled checkpoint ran, as data, and the runner that replays them."""

from __future__ import annotations


from typing import Tuple




# The phases the bundled checkpoint ran, in order, each from the previous phase's state.pt
# (``{prev}``); ``--stop-at`` ends a phase while its cosine schedule still spans ``--max-steps``.
# p1, p2 ran at commit efb7aea, when moving_direction moved 2 px per step from any pixel (check that
# commit out to rerun them exactly); from p3 on, the current generator (one sprite per step).
# p1: alignment stage, then the language model with the vision front end frozen, plain causal
#     attention, tasks added one at a time (the letter circuit forms on the static task first).
# p2, p3: the planted pathway: attention modes last / full / knockout mixed in.
# p4: alignment again, now with the regions' position codes (moving direction needs positions).
# p5: planting with more knockout samples (knockout accuracy then stays near chance).
# p6: moving direction alone, plain causal attention, with the video-token direction targets: the
#     cross-frame step forms at the video tokens (100% per frame in 400 steps; with all tasks
#     mixed it did not form in 500 steps).
# p7, p8: every task again under the planting modes (the letters re-form), moving direction upweighted
#     (p8 stopped at step 800 with the moving-direction letter still at chance).
# p9: the direction targets read through the logit lens after block 3 (before: only at the last
#     layer, where the horizontal direction formed in block 5, too late for text to read and match).
# p10: moving direction's knockout draws run in mode 'last' (with the uniform-letter target its letter
#     hedged near 1/4 in every mode although the option flags were right 98% of the time).
# p11: the letter target weighted x5 against the intermediate targets (the bundled checkpoint: step 800).
_STAGE2 = ("--seed", "0", "--init-from", "{prev}", "--freeze-vision", "--inplace-answer", "--option-flags",
           "--p-aux", "0", "--p-aux-start", "0", "--minutes", "150", "--eval-every", "100")
_PLANT = ("--knockout-from", "50", "--mode-probs", "0.55", "0.1", "0.35", "--align-position", "0.5")
_LENS = ("--video-targets", "--video-targets-layer", "3", "--task-weights", "moving_direction:4")
RECIPE: Tuple[Tuple[str, Tuple[str, ...]], ...] = (
    ("p1_curriculum", ("--seed", "0", "--vision-pretrain", "800", "--freeze-vision", "--full-until", "2500",
                       "--inplace-answer", "--option-flags", "--p-aux", "0", "--p-aux-start", "0", "--proj-out-std", "0.02",
                       "--max-steps", "6000", "--minutes", "70", "--eval-every", "100", "--stop-at", "1600",
                       "--task-start", "color_change:600", "scene_transition:900", "appearance_order:1200",
                       "moving_direction:1500")),
    ("p2_planting", _STAGE2 + ("--max-steps", "4000", "--stop-at", "1600", "--task-start", "moving_direction:100",
                               "--knockout-from", "300", "--lr", "1e-3")),
    ("p3_grid_motion", _STAGE2 + ("--max-steps", "3000", "--stop-at", "500", "--knockout-from", "100", "--lr", "1e-3")),
    ("p4_position_alignment", _STAGE2 + ("--vision-pretrain", "600", "--align-position", "0.5", "--max-steps", "3000",
                                         "--stop-at", "200", "--knockout-from", "100", "--lr", "1e-3")),
    ("p5_planting", _STAGE2 + _PLANT + ("--max-steps", "3000", "--stop-at", "400", "--lr", "1e-3")),
    ("p6_motion", _STAGE2 + ("--align-position", "0.5", "--video-targets", "--tasks", "moving_direction",
                             "--full-until", "100000", "--max-steps", "1500", "--stop-at", "400", "--lr", "2e-3")),
    ("p7_all", _STAGE2 + _PLANT + ("--video-targets", "--max-steps", "2500", "--stop-at", "400", "--lr", "1e-3")),
    ("p8_motion_weighted", _STAGE2 + _PLANT + ("--video-targets", "--task-weights", "moving_direction:4",
                                               "--max-steps", "2500", "--stop-at", "800", "--lr", "1e-3")),
    ("p9_lens_targets", _STAGE2 + _PLANT + _LENS + ("--max-steps", "3000", "--stop-at", "400", "--lr", "1e-3")),
    ("p10_motion_letter", _STAGE2 + _PLANT + _LENS + ("--no-knockout", "moving_direction", "--max-steps", "3000",
                                                      "--stop-at", "1800", "--lr", "1e-3")),
    ("p11_letter_weight", _STAGE2 + _PLANT + _LENS + ("--no-knockout", "moving_direction", "--letter-weight", "5",
                                                      "--max-steps", "1500", "--stop-at", "800", "--lr", "5e-4")),
)
