-- Issue 5: new projects select pairs with `mixed` (70% scored by the ensemble's disagreement,
-- 30% by the random rules), the strategy the label-efficiency benchmark supports
-- (docs/benchmarks.md, `backflip bench select`): on the text task it reached random
-- selection's 1,000-label accuracy with ~69% of the labels, and on the GIF task it was never
-- worse than random (its seed range overlaps random's at every checkpoint), where
-- `uncertainty` alone fell behind at 200-500 labels. Before a project's first reward model
-- `mixed` generates pairs exactly as `random` does. Existing projects keep their strategy.
alter table projects alter column strategy set default 'mixed';
