// Patterns for the path part of SPIFFE IDs ("/ns/*/sa/slim": `*` matches within one segment),
// used where a policy names which workloads are nodes: the node's link rule and the
// controller's registration authorizer.

import { z } from 'zod';

export interface PathPattern {
  text: string;
  re: RegExp;
}

export const PATH_PATTERN_HINT = 'must be a SPIFFE ID path such as /ns/slim/sa/slim (letters, digits, . _ - and * within segments)';

export function isPathPattern(p: string): boolean {
  return /^(\/[A-Za-z0-9._*-]+)+$/.test(p);
}

export const pathPatternField = z.string().refine(isPathPattern, { message: PATH_PATTERN_HINT });

export function compilePathPatterns(texts: readonly string[]): PathPattern[] {
  return texts.map((text) => ({ text, re: new RegExp(`^${text.replace(/[.+?^${}()|[\]\\]/g, '\\$&').replaceAll('*', '[^/]*')}$`) }));
}

export function matchesAny(patterns: readonly PathPattern[], path: string): boolean {
  return patterns.some((p) => p.re.test(path));
}
