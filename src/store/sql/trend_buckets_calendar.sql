SELECT b
  FROM (SELECT g AT TIME ZONE {tz}::text AS b
          FROM generate_series(date_trunc({unit}::text, {start}::timestamptz AT TIME ZONE {tz}::text),
                               {end}::timestamptz AT TIME ZONE {tz}::text,
                               ('1 ' || {unit}::text)::interval) AS g) AS s
 WHERE b < {end}::timestamptz
