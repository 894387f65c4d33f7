SELECT b FROM generate_series(date_trunc('hour', {start}::timestamptz, {tz}::text), {end}::timestamptz, interval '1 hour') AS b
 WHERE b < {end}::timestamptz
