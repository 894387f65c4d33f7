SELECT b
  FROM generate_series(date_trunc('hour', $1::timestamptz, $3::text), $2::timestamptz, interval '1 hour') AS b
 WHERE b < $2::timestamptz
 LIMIT $4
