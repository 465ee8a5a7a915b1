-- The fence on its own: does backend $2 hold lock $1 now?
SELECT reconciler.holds_lock($1, $2)
