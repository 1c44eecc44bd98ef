//! Where each expression node starts in the query text, for annotations:
//! Prometheus ends an annotation's message with the `line:column` of the
//! node it is about (`annotations.go`, `posrange.go`). `promql-parser` keeps
//! no positions, so we re-lex the query and walk its tokens in lockstep with
//! the parsed expression; the AST settles every ambiguity (precedence,
//! optional arguments), so the walk only has to skip the tokens each node
//! is made of.

use std::collections::HashMap;

use lrpar::{Lexeme, Lexer};
use promql_parser::parser::token::{
    T_ADD, T_ANCHORED, T_AT, T_BOOL, T_BY, T_COMMA, T_EOF, T_FILL, T_FILL_LEFT, T_FILL_RIGHT,
    T_GROUP_LEFT, T_GROUP_RIGHT, T_IGNORING, T_LEFT_BRACE, T_LEFT_BRACKET, T_LEFT_PAREN, T_OFFSET,
    T_ON, T_RIGHT_BRACE, T_RIGHT_BRACKET, T_RIGHT_PAREN, T_SMOOTHED, T_SUB, T_WITHOUT, TokenId,
};
use promql_parser::parser::{Call, Expr, VectorSelector};

/// Start offsets (bytes) of expression nodes, keyed by node address.
#[derive(Default)]
pub(crate) struct Positions {
    query: String,
    starts: HashMap<usize, usize>,
}

fn key<T>(node: &T) -> usize {
    node as *const T as usize
}

impl Positions {
    /// Positions of every node of `ast`, parsed from `query`. Empty when the
    /// tokens cannot be matched to the expression (never expected).
    pub fn new(query: &str, ast: &Expr) -> Self {
        let Ok(lexer) = promql_parser::parser::lexer(query) else {
            return Self::default();
        };
        let toks: Vec<(TokenId, usize)> = lexer
            .iter()
            .filter_map(|l| l.ok())
            .map(|l| (l.tok_id(), l.span().start()))
            .filter(|&(t, _)| t != T_EOF)
            .collect();
        let mut w = Walker {
            toks,
            i: 0,
            starts: HashMap::new(),
        };
        match w.expr(ast) {
            Some(()) if w.i == w.toks.len() => Positions {
                query: query.to_string(),
                starts: w.starts,
            },
            _ => Self::default(),
        }
    }

    fn suffix(&self, k: usize) -> String {
        let Some(&pos) = self.starts.get(&k) else {
            return String::new();
        };
        let before = &self.query[..pos];
        let line = before.matches('\n').count() + 1;
        let col = pos - before.rfind('\n').map_or(0, |i| i + 1) + 1;
        format!(" ({line}:{col})")
    }

    /// ` (line:column)` of where `expr` starts, or "" when unknown.
    pub fn of(&self, expr: &Expr) -> String {
        self.suffix(key(expr))
    }

    /// ` (line:column)` of where a function call starts, or "" when unknown.
    pub fn of_call(&self, call: &Call) -> String {
        self.suffix(key(call))
    }
}

struct Walker {
    toks: Vec<(TokenId, usize)>,
    i: usize,
    starts: HashMap<usize, usize>,
}

impl Walker {
    fn peek(&self) -> Option<TokenId> {
        self.toks.get(self.i).map(|t| t.0)
    }

    fn pos(&self) -> Option<usize> {
        self.toks.get(self.i).map(|t| t.1)
    }

    fn eat(&mut self, tok: TokenId) -> bool {
        if self.peek() == Some(tok) {
            self.i += 1;
            true
        } else {
            false
        }
    }

    fn expect(&mut self, tok: TokenId) -> Option<()> {
        self.eat(tok).then_some(())
    }

    /// Skips a balanced group opened by the current token `open`.
    fn skip_group(&mut self, open: TokenId, close: TokenId) -> Option<()> {
        self.expect(open)?;
        let mut depth = 1;
        while depth > 0 {
            let t = self.peek()?;
            self.i += 1;
            if t == open {
                depth += 1;
            } else if t == close {
                depth -= 1;
            }
        }
        Some(())
    }

    /// `offset`, `@`, `smoothed` and `anchored` modifiers, in any order.
    fn modifiers(&mut self) -> Option<()> {
        loop {
            match self.peek() {
                Some(T_SMOOTHED | T_ANCHORED) => self.i += 1,
                Some(T_OFFSET | T_AT) => {
                    self.i += 1;
                    while matches!(self.peek(), Some(T_ADD | T_SUB)) {
                        self.i += 1;
                    }
                    if self.peek() == Some(T_LEFT_PAREN) {
                        self.skip_group(T_LEFT_PAREN, T_RIGHT_PAREN)?;
                    } else {
                        // A duration, a number, or `start()` / `end()`.
                        self.peek()?;
                        self.i += 1;
                        if self.peek() == Some(T_LEFT_PAREN) {
                            self.skip_group(T_LEFT_PAREN, T_RIGHT_PAREN)?;
                        }
                    }
                }
                _ => return Some(()),
            }
        }
    }

    /// A selector's name and matchers (without modifiers).
    fn selector(&mut self, vs: &VectorSelector) -> Option<()> {
        self.starts.insert(key(vs), self.pos()?);
        if self.peek() != Some(T_LEFT_BRACE) {
            self.i += 1;
        }
        if self.peek() == Some(T_LEFT_BRACE) {
            self.skip_group(T_LEFT_BRACE, T_RIGHT_BRACE)?;
        }
        Some(())
    }

    /// A grouping label list `( ... )` after `by`/`without`/`on`/...
    fn opt_group(&mut self) -> Option<()> {
        if self.peek() == Some(T_LEFT_PAREN) {
            self.skip_group(T_LEFT_PAREN, T_RIGHT_PAREN)?;
        }
        Some(())
    }

    fn expr(&mut self, e: &Expr) -> Option<()> {
        match e {
            Expr::NumberLiteral(_) => {
                // `-1` folds into the literal, which starts at the sign.
                self.starts.insert(key(e), self.pos()?);
                while matches!(self.peek(), Some(T_ADD | T_SUB)) {
                    self.i += 1;
                }
                self.i += 1;
                return Some(());
            }
            Expr::Unary(u) => {
                while self.eat(T_ADD) {}
                self.starts.insert(key(e), self.pos()?);
                self.expect(T_SUB)?;
                return self.expr(&u.expr);
            }
            // Both start where their first operand does.
            Expr::Subquery(sq) => {
                self.expr(&sq.expr)?;
                self.starts
                    .insert(key(e), *self.starts.get(&key(&*sq.expr))?);
                self.skip_group(T_LEFT_BRACKET, T_RIGHT_BRACKET)?;
                return self.modifiers();
            }
            Expr::Binary(b) => {
                self.expr(&b.lhs)?;
                self.starts.insert(key(e), *self.starts.get(&key(&*b.lhs))?);
                self.peek()?;
                self.i += 1; // the operator
                loop {
                    match self.peek() {
                        Some(T_BOOL) => self.i += 1,
                        Some(
                            T_ON | T_IGNORING | T_GROUP_LEFT | T_GROUP_RIGHT | T_FILL | T_FILL_LEFT
                            | T_FILL_RIGHT,
                        ) => {
                            self.i += 1;
                            self.opt_group()?;
                        }
                        _ => break,
                    }
                }
                self.expr(&b.rhs)?;
                return Some(());
            }
            _ => {}
        }
        // A leading `+` (and signs the parser folded away) are no node.
        while matches!(self.peek(), Some(T_ADD | T_SUB)) {
            self.i += 1;
        }
        self.starts.insert(key(e), self.pos()?);
        match e {
            Expr::NumberLiteral(_) | Expr::Unary(_) => unreachable!(),
            Expr::StringLiteral(_) => self.i += 1,
            Expr::VectorSelector(vs) => {
                self.selector(vs)?;
                self.modifiers()?;
            }
            Expr::MatrixSelector(ms) => {
                self.selector(&ms.vs)?;
                self.skip_group(T_LEFT_BRACKET, T_RIGHT_BRACKET)?;
                self.modifiers()?;
            }
            Expr::Subquery(_) | Expr::Binary(_) => unreachable!(),
            Expr::Paren(p) => {
                self.expect(T_LEFT_PAREN)?;
                self.expr(&p.expr)?;
                self.expect(T_RIGHT_PAREN)?;
            }
            Expr::Call(c) => {
                self.starts.insert(key::<Call>(c), self.pos()?);
                self.i += 1;
                self.expect(T_LEFT_PAREN)?;
                for (n, arg) in c.args.args.iter().enumerate() {
                    // Arguments the parser filled in have no text.
                    if self.peek() == Some(T_RIGHT_PAREN) {
                        break;
                    }
                    if n > 0 {
                        self.expect(T_COMMA)?;
                    }
                    self.expr(arg)?;
                }
                self.expect(T_RIGHT_PAREN)?;
            }
            Expr::Aggregate(a) => {
                self.i += 1;
                if matches!(self.peek(), Some(T_BY | T_WITHOUT)) {
                    self.i += 1;
                    self.opt_group()?;
                }
                self.expect(T_LEFT_PAREN)?;
                if let Some(p) = &a.param {
                    self.expr(p)?;
                    self.expect(T_COMMA)?;
                }
                self.expr(&a.expr)?;
                self.expect(T_RIGHT_PAREN)?;
                if matches!(self.peek(), Some(T_BY | T_WITHOUT)) {
                    self.i += 1;
                    self.opt_group()?;
                }
            }

            Expr::Extension(_) => return None,
        }
        Some(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use promql_parser::parser::parse;

    fn arg_pos(q: &str, n: usize) -> String {
        let ast = parse(q).unwrap();
        let p = Positions::new(q, &ast);
        let mut e = &ast;
        loop {
            match e {
                Expr::Call(c) => return p.of(&c.args.args[n]),
                Expr::Aggregate(a) => e = &a.expr,
                Expr::Binary(b) => e = &b.lhs,
                Expr::Paren(x) => e = &x.expr,
                _ => panic!("no call in {q}"),
            }
        }
    }

    #[test]
    fn call_arguments() {
        assert_eq!(arg_pos("rate(some_metric[1m])", 0), " (1:6)");
        assert_eq!(arg_pos("histogram_quantile(0.8, series)", 1), " (1:25)");
        assert_eq!(arg_pos("histogram_fraction(-Inf, 1, series)", 2), " (1:29)");
        assert_eq!(
            arg_pos(
                "sum by (a) (rate(x{a=\"b\"}[5m] offset 1m @ start()))\n  + on (a) group_left (b) -2 * rate(y[1m:10s])",
                0
            ),
            " (1:18)"
        );
    }

    #[test]
    fn lines_and_sides() {
        let q = "x\n/ on() group_left\n  rate({__name__=\"y\"}[1m])";
        let ast = parse(q).unwrap();
        let p = Positions::new(q, &ast);
        let Expr::Binary(b) = &ast else { panic!() };
        assert_eq!(p.of(&b.lhs), " (1:1)");
        let Expr::Call(c) = &*b.rhs else { panic!() };
        assert_eq!(p.of(&b.rhs), " (3:3)");
        assert_eq!(p.of(&c.args.args[0]), " (3:8)");
        let q = "count(limit_ratio(-1.1, m)) - -  y offset -5m";
        let ast = parse(q).unwrap();
        let p = Positions::new(q, &ast);
        let Expr::Binary(b) = &ast else { panic!() };
        let Expr::Aggregate(a) = &*b.lhs else {
            panic!()
        };
        let Expr::Aggregate(l) = &*a.expr else {
            panic!()
        };
        assert_eq!(p.of(l.param.as_ref().unwrap()), " (1:19)");
        assert_eq!(p.of(&b.rhs), " (1:31)");
    }
}
