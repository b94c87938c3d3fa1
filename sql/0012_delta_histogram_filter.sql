-- Reads of pending latency histograms cost the entries they want.
--
-- usage_rollup_delta_histograms returns every histogram entry of a delta
-- row; a read wants those of a few proxies over a few days, so it paid for
-- every entry of every row naming one of them (a flush holds hundreds of
-- proxy-days). This variant finds the wanted proxies' positions with
-- array_positions (C, one pass over proxy_ids per wanted proxy), keeps
-- those within the days, and returns only their entries. Ingest writes
-- latency_entries in ascending position order, so a position's entries are
-- found by binary search and read in a run.

-- +goose Up
-- +goose StatementBegin
CREATE FUNCTION usage_rollup_delta_histograms_for(p_proxy_ids text[], p_days date[], p_entries int[], p_buckets smallint[], p_samples bigint[],
                                                  p_want text[], p_first date, p_last date)
RETURNS TABLE (proxy_id text, day date, latency_bucket smallint, samples bigint)
LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE ROWS 100 AS $$
DECLARE
  n   int := coalesce(array_length(p_entries, 1), 0);
  w   text;
  pos int;
  lo  int;
  hi  int;
  mid int;
BEGIN
  IF n = 0 THEN
    RETURN;
  END IF;
  FOR w IN SELECT DISTINCT x FROM unnest(p_want) AS x LOOP
    FOREACH pos IN ARRAY coalesce(array_positions(p_proxy_ids, w), '{}') LOOP
      CONTINUE WHEN p_days[pos] < p_first OR p_days[pos] > p_last;
      -- First entry at or after pos.
      lo := 1;
      hi := n + 1;
      WHILE lo < hi LOOP
        mid := (lo + hi) / 2;
        IF p_entries[mid] < pos THEN
          lo := mid + 1;
        ELSE
          hi := mid;
        END IF;
      END LOOP;
      proxy_id := w;
      day := p_days[pos];
      WHILE lo <= n AND p_entries[lo] = pos LOOP
        latency_bucket := p_buckets[lo];
        samples := p_samples[lo];
        RETURN NEXT;
        lo := lo + 1;
      END LOOP;
    END LOOP;
  END LOOP;
END
$$;
-- +goose StatementEnd

-- +goose Down
DROP FUNCTION usage_rollup_delta_histograms_for;
